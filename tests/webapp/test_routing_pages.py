"""The app routes studies by body part: the admin picks a model per part, the doctor's study goes
to it (two small models on wrist + finger phantoms)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from fracturescan.store import settings, users
from fracturescan.store.db import AuditStudy
from tests.conftest import RoutedModels
from tests.routing_helpers import as_dicom, as_png, phantom_study

from .conftest import ADMIN_PASSWORD, DOCTOR_PASSWORD
from .test_app import login, new_app, texts


@pytest.fixture
def engine(tmp_path: Path, routed_models: RoutedModels, monkeypatch: pytest.MonkeyPatch):
    from fracturescan.store.db import make_engine
    from fracturescan.appconfig import ENV_DB_URL, ENV_MODELS_DIR

    url = f"sqlite:///{tmp_path / 'app.db'}"
    for key, value in {ENV_DB_URL: url, ENV_MODELS_DIR: str(routed_models.models),
                       "FRACTURESCAN_ADMIN_PASSWORD": ADMIN_PASSWORD}.items():
        monkeypatch.setenv(key, value)
    engine = make_engine(url)
    users.ensure_admin(engine, ADMIN_PASSWORD)
    users.create_user(engine, "drsmith", DOCTOR_PASSWORD, "doctor", actor="test")
    return engine


def _analyse(at, uploads: list[tuple[str, bytes]], part_label: str | None = None):
    if part_label is not None:
        at.selectbox(key="body_part").select(part_label)
        at.run()
    at.get("file_uploader")[0].set_value([(name, data, "application/octet-stream") for name, data in uploads])
    at.run()
    next(b for b in at.button if b.label == "Analyse images").click()
    return at.run()


def _studies(engine) -> list[AuditStudy]:
    with Session(engine) as session:
        return list(session.scalars(select(AuditStudy).order_by(AuditStudy.id)))


def test_admin_sets_the_finger_model_and_the_doctors_study_goes_to_it(engine, routed_models: RoutedModels) -> None:
    at = login(new_app("models"), "admin", ADMIN_PASSWORD)
    at.query_params["page"] = "models"
    at.run()
    assert "no model covers this part" in str(at.dataframe[1].value)  # XR_ELBOW & co. listed as refused
    at.selectbox(key="part_model_XR_FINGER").select("finger")
    next(b for b in at.button if b.label == "Save body-part models").click()
    at.run()
    assert not at.exception
    assert settings.get_setting(engine, settings.part_model_key("XR_FINGER")) == "finger"

    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    fingers = [as_dicom(p, "FINGER") for p in phantom_study(routed_models.data, "XR_FINGER")]
    at = _analyse(at, fingers)
    assert not at.exception
    assert "Analysed with model **finger** for XR_FINGER (the DICOM body part)." in texts(at)
    assert [s.model_id for s in _studies(engine)] == ["finger"]

    wrists = [as_png(p) for p in phantom_study(routed_models.data, "XR_WRIST")]
    at = _analyse(at, wrists, "XR_WRIST: model both")
    assert "Analysed with model **both** for XR_WRIST (the body part you chose)." in texts(at)
    assert [s.model_id for s in _studies(engine)] == ["finger", "both"]


def test_a_part_no_model_covers_is_one_error_and_nothing_is_recorded(engine, routed_models: RoutedModels) -> None:
    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    at = _analyse(at, [as_png(phantom_study(routed_models.data, "XR_WRIST")[0])], "XR_ELBOW: no model covers it")
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("No model covers XR_ELBOW") for e in errors)
    assert not _studies(engine)
    finger = phantom_study(routed_models.data, "XR_FINGER")[0]
    wrist = phantom_study(routed_models.data, "XR_WRIST")[0]
    at = _analyse(at, [as_dicom(wrist, "WRIST"), as_dicom(finger, "FINGER")], "Automatic (from the DICOM header)")
    assert any(e.value.startswith("Mixed body parts in one study") for e in at.error)
    assert not _studies(engine)
