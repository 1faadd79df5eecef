"""The background job that makes the session's trained phantom models (tests/phantom_models.py):
the order it makes pieces in, what it leaves when a piece fails, and that it skips finished ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import phantom_models


def test_requirements_come_first_and_once() -> None:
    order = phantom_models.with_requirements(["shuffled_run", "routed_models", "phantom_run"])
    assert order == ["phantom_mura", "shuffled_run", "routed_models", "phantom_run"]
    # every piece's requirements are pieces too, and come before it in any order asked for
    for name, (needs, _) in phantom_models.PIECES.items():
        made = phantom_models.with_requirements([name])
        assert made[-1] == name and set(needs) <= set(made[:-1]) <= set(phantom_models.PIECES)


def test_a_failing_piece_leaves_its_traceback_and_stops_the_job(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def ok(root: Path) -> None:
        made.append("ok")

    def broken(root: Path) -> None:
        raise RuntimeError("no disk left")

    monkeypatch.setattr(phantom_models, "PIECES", {"a": ((), ok), "b": (("a",), broken), "c": ((), ok)})
    assert phantom_models.main([str(tmp_path), "b", "c"]) == 1
    assert made == ["ok"]  # a, then b failed, and c was not started
    assert (tmp_path / "a.done").exists() and not (tmp_path / "b.done").exists()
    assert "RuntimeError: no disk left" in (tmp_path / "b.failed").read_text()
    assert not (tmp_path / "c.done").exists()


def test_finished_pieces_are_not_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    monkeypatch.setattr(phantom_models, "PIECES", {"a": ((), lambda root: made.append("a")),
                                                   "b": (("a",), lambda root: made.append("b"))})
    (tmp_path / "a.done").touch()
    assert phantom_models.main([str(tmp_path), "b"]) == 0
    assert made == ["b"] and (tmp_path / "b.done").exists()
