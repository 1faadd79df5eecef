"""Security review findings in the web app, through Streamlit's AppTest: a visitor's "clear
cache" message does not reload models, upload names are shown literally, the login page says
how a first admin signs in. (Session binding, the upload route and the idle timer need a real
browser: test_browser_security.py.)"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import streamlit as st

from fracturescan.appconfig import ENV_MODELS_DIR

from .conftest import DOCTOR_PASSWORD, png_bytes
from .test_app import login, new_app, texts


def _analyse(at, *files: tuple[str, bytes, str]):
    at.get("file_uploader")[0].set_value(list(files))
    at.run()
    next(b for b in at.button if b.label == "Analyse images").click()
    return at.run()


def test_clearing_streamlits_caches_does_not_reload_the_model(engine, models_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Any visitor can send Streamlit's clearCache message; its handler empties st.cache_data
    and st.cache_resource. The loaded model must not depend on them."""
    from fracturescan.inference import Predictor

    own = tmp_path / "models"  # a folder no other test loaded, so the first load happens here
    shutil.copytree(models_dir / "run_b", own / "run_b")
    monkeypatch.setenv(ENV_MODELS_DIR, str(own))
    loads: list[str] = []
    real = Predictor.from_checkpoint.__func__
    monkeypatch.setattr(Predictor, "from_checkpoint",
                        classmethod(lambda cls, path, *a, **kw: loads.append(str(path)) or real(cls, path, *a, **kw)))
    at = _analyse(login(new_app(), "drsmith", DOCTOR_PASSWORD), ("a.png", png_bytes(1), "image/png"))
    assert not at.exception and len(loads) == 1
    st.cache_resource.clear()  # what AppSession._handle_clear_cache_request does
    st.cache_data.clear()
    at = _analyse(login(new_app(), "drsmith", DOCTOR_PASSWORD), ("b.png", png_bytes(2), "image/png"))
    assert not at.exception and "audit record #2" in texts(at)
    assert len(loads) == 1, "the model was loaded again"


_LINK = re.compile(r"(?<!\\)\]\(")  # a Markdown link or image: '](' not escaped


def test_upload_names_and_errors_are_shown_literally(engine) -> None:
    evil = "[click](http://evil.example/x)![p](http://evil.example/p.png)_*x*_.png"
    at = _analyse(login(new_app(), "drsmith", DOCTOR_PASSWORD), (evil, png_bytes(3), "image/png"),
                  ("![q](http://evil.example/q.png).png", b"not an image", "image/png"))
    assert not at.exception
    shown = [e.value for kind in ("markdown", "error") for e in getattr(at, kind) if "evil" in e.value]
    assert len(shown) == 2, shown  # the scored image's line and the unreadable one's error
    for value in shown:
        assert not _LINK.search(value) and "\\[" in value and "\\(" in value, value


def test_login_page_tells_a_first_admin_where_the_password_is(app_env, monkeypatch: pytest.MonkeyPatch) -> None:
    from fracturescan.store import users

    monkeypatch.delenv("FRACTURESCAN_ADMIN_PASSWORD")
    at = new_app()
    assert "no account exists yet" in texts(at) and "fracturescan user create-admin" in texts(at)
    engine = users.open_store(app_env["FRACTURESCAN_DB_URL"])
    one_time = users.ensure_admin(engine, None)
    at = new_app()
    assert "one-time password printed in the terminal" in texts(at)
    assert "fracturescan user reset-password admin" in texts(at)
    assert one_time not in texts(at)
    login(at, "admin", one_time)
    assert "First start" not in texts(new_app())  # once someone has signed in, the hint goes


def test_a_broken_active_model_shows_one_line_without_paths(engine, models_dir: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from fracturescan.store import settings

    own = tmp_path / "secret-folder"
    shutil.copytree(models_dir / "run_b", own / "run_b")
    weights = own / "run_b" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")  # tampered: SHA-256 differs
    monkeypatch.setenv(ENV_MODELS_DIR, str(own))
    settings.set_setting(engine, settings.ACTIVE_MODEL, "run_b", actor="admin")  # the admin chose it
    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    assert not at.exception
    assert "run\\_b could not be loaded" in texts(at) and "Model & settings" in texts(at)
    assert str(tmp_path) not in texts(at) and "secret-folder" not in texts(at)
