"""Body-part routing on wrist + finger phantoms with two small trained models, and the per-part
evaluation of the model trained on both parts."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("argon2")
pytest.importorskip("pydicom")

from fracturescan.errors import RoutingError  # noqa: E402
from fracturescan.routing import part_assignments, route_study  # noqa: E402
from fracturescan.service import discover_models  # noqa: E402
from fracturescan.store import settings  # noqa: E402
from tests.conftest import RoutedModels  # noqa: E402
from tests.routing_helpers import as_dicom, as_png, phantom_study  # noqa: E402


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    """One database for the module (creating the admin's argon2 hash costs a second); only the
    first test sets a part model, and no later test depends on that part's choice."""
    from fracturescan.store.users import open_store

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FRACTURESCAN_ADMIN_PASSWORD", "admin-password-123")
        return open_store(f"sqlite:///{tmp_path_factory.mktemp('routing') / 'routing.db'}")


def test_routes_by_dicom_by_choice_and_by_the_admins_part_model(routed_models: RoutedModels, engine) -> None:
    models = discover_models(routed_models.models)
    assert [m.model_id for m in models] == ["both", "finger"]
    fingers = [as_dicom(p, "FINGER") for p in phantom_study(routed_models.data, "XR_FINGER")]
    wrist_pngs = [as_png(p) for p in phantom_study(routed_models.data, "XR_WRIST")]

    # No admin choice: the overall active model ("both", found first) covers fingers too.
    route = route_study(engine, models, fingers)
    assert (route.choice.model_id, route.body_part, route.source) == ("both", "XR_FINGER", "dicom")
    settings.set_setting(engine, settings.part_model_key("XR_FINGER"), "finger", actor="admin")
    route = route_study(engine, models, fingers)
    assert (route.choice.model_id, route.source) == ("finger", "dicom")
    assert route_study(engine, models, fingers, "finger").source == "request"

    # PNGs carry no part: the user's choice routes them; without one, the default model.
    assert route_study(engine, models, [as_png(p) for p in phantom_study(routed_models.data, "XR_FINGER")],
                       "XR_FINGER").choice.model_id == "finger"
    route = route_study(engine, models, wrist_pngs, "wrist")
    assert (route.choice.model_id, route.body_part) == ("both", "XR_WRIST")
    assert route_study(engine, models, wrist_pngs).source == "default"

    # A value naming no one part does not decide, and says so.
    route = route_study(engine, models, [as_dicom(phantom_study(routed_models.data, "XR_WRIST")[0], "EXTREMITY")])
    assert route.source == "default" and "EXTREMITY" in route.notes[0]
    assignments = {part: (c.model_id if c else None) for part, c in part_assignments(engine, models).items()}
    assert assignments["XR_FINGER"] == "finger" and assignments["XR_WRIST"] == "both"
    assert assignments["XR_ELBOW"] is None


@pytest.mark.parametrize("case, pattern", [
    ("mixed", r"^Mixed body parts in one study \(.*WRIST.*FINGER.*\); send each body part as its own study\.$"),
    ("uncovered", r"^No model covers XR_ELBOW: the models here cover XR_FINGER, XR_WRIST only"),
    ("contradiction", r"^The DICOM header says FINGER but XR_WRIST was chosen"),
    ("foreign", r"^No model covers HIP \(DICOM body part\)"),
    ("unknown", r"^Unknown body part 'knee'"),
])
def test_refusals_are_one_line(routed_models: RoutedModels, engine, case: str, pattern: str) -> None:
    models = discover_models(routed_models.models)
    wrist = phantom_study(routed_models.data, "XR_WRIST")[0]
    finger = phantom_study(routed_models.data, "XR_FINGER")[0]
    uploads, requested = {
        "mixed": ([as_dicom(wrist, "WRIST"), as_dicom(finger, "FINGER")], None),
        "uncovered": ([as_png(wrist)], "elbow"),
        "contradiction": ([as_dicom(finger, "FINGER")], "XR_WRIST"),
        "foreign": ([as_dicom(wrist, "HIP")], None),
        "unknown": ([as_png(wrist)], "knee"),
    }[case]
    with pytest.raises(RoutingError, match=pattern) as info:
        route_study(engine, models, uploads, requested)
    assert "\n" not in str(info.value)


def test_models_without_recorded_parts_keep_the_old_behaviour(routed_models: RoutedModels, engine) -> None:
    """Checkpoints from CSV/folder data record no part: every study goes to the active model."""
    from fracturescan.checkpoint import Checkpoint
    from fracturescan.service import ModelChoice

    models = [ModelChoice(m.model_id, Checkpoint(m.path, dataclasses.replace(m.metadata, body_parts=())))
              for m in discover_models(routed_models.models)]
    finger = phantom_study(routed_models.data, "XR_FINGER")[0]
    route = route_study(engine, models, [as_dicom(finger, "FINGER")])
    assert route.choice.model_id == "both" and route.source == "default" and route.notes


def test_evaluate_reports_each_phantom_part(routed_models: RoutedModels, tmp_path: Path, capsys) -> None:
    from fracturescan.cli.output import echo_metrics
    from fracturescan.evaluation.run import evaluate_run

    metrics, folder = evaluate_run(routed_models.models / "both", out=tmp_path / "eval", n_boot=50)
    rows = {row["body_part"]: row for row in metrics["per_body_part"]["rows"]}
    assert list(rows) == ["XR_FINGER", "XR_WRIST", "pooled"]
    labels: dict[str, list[int]] = {"XR_FINGER": [], "XR_WRIST": []}
    for line in (routed_models.data / "valid_labeled_studies.csv").read_text().splitlines():
        labels[line.split("/")[2]].append(int(line.rsplit(",", 1)[1]))
    for part, found in labels.items():
        assert (rows[part]["studies"], rows[part]["abnormal_studies"]) == (len(found), sum(found))
    with (folder / "predictions.csv").open(newline="") as handle:
        parts = {row["path"]: row["body_part"] for row in csv.DictReader(handle)}
    assert all(f"/{part}/" in path for path, part in parts.items())
    assert "Per body part" in (folder / "report.md").read_text()
    echo_metrics(metrics)  # what `fracturescan evaluate` prints
    printed = [line.split() for line in capsys.readouterr().out.splitlines()]
    finger = next(line for line in printed if line and line[0] == "XR_FINGER")
    assert int(finger[1]) == rows["XR_FINGER"]["studies"]
    assert finger[2] == ("-" if rows["XR_FINGER"]["kappa"] is None else f"{rows['XR_FINGER']['kappa']:.3f}")
