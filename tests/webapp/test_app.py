"""Streamlit AppTest tests: every page, both roles, the anonymous visitor, the audit trail."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..real_samples import hand
from .conftest import ADMIN_PASSWORD, DOCTOR_PASSWORD, as_wrist_dicom, png_bytes

from streamlit.testing.v1 import AppTest  # noqa: E402  (after the importorskips in conftest)

from fracturescan.store import settings, users  # noqa: E402
from fracturescan.store.db import AuditImage, AuditStudy, Event, Feedback  # noqa: E402
from fracturescan.webapp import APP_SCRIPT  # noqa: E402
from fracturescan.webapp.main import ADMIN_PAGES, PAGES  # noqa: E402


def new_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=60)
    if page:
        at.query_params["page"] = page
    return at.run()


def login(at: AppTest, username: str, password: str) -> AppTest:
    at.text_input(key="login_username").input(username)
    at.text_input(key="login_password").input(password)
    next(b for b in at.button if b.label == "Log in").click()
    return at.run()


def texts(at: AppTest) -> str:
    """Everything the page shows as text (markdown, alerts, captions, headers)."""
    parts = [e.value for kind in ("markdown", "error", "warning", "success", "info", "caption",
                                  "header", "title") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def assert_login_only(at: AppTest) -> None:
    assert not at.exception
    assert [t.key for t in at.text_input] == ["login_username", "login_password"]
    assert [b.label for b in at.button] == ["Log in"]
    assert len(at.get("file_uploader")) == 0 and len(at.dataframe) == 0 and len(at.sidebar.button) == 0


@pytest.mark.parametrize("page", [None, *PAGES])
def test_anonymous_sees_only_login(engine, page: str | None) -> None:
    assert_login_only(new_app(page))


def test_wrong_password_is_refused_and_stays_on_login(engine) -> None:
    at = login(new_app(), "drsmith", "not-the-password")
    assert "Wrong user name or password" in texts(at)
    assert_login_only(at)


@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_doctor_cannot_reach_admin_pages(engine, page: str) -> None:
    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    assert len(at.get("file_uploader")) == 1  # logged in, on the analyse page
    at.query_params["page"] = page
    at.run()
    assert not at.exception
    assert "You do not have access to this page." in [e.value for e in at.error]
    assert len(at.dataframe) == 0 and len(at.get("file_uploader")) == 0
    assert len(at.text_input) == 0 and len(at.number_input) == 0 and len(at.selectbox) == 0
    sidebar = [b.label for b in at.sidebar.button]
    assert sidebar == ["Analyse", "My account", "Log out"]
    with Session(engine) as s:
        denied = s.scalars(select(Event).where(Event.action == "access_denied")).all()
    assert [e.actor for e in denied] == ["drsmith"] and page in denied[0].detail


@pytest.mark.parametrize("page", list(PAGES))
def test_admin_reaches_every_page(engine, page: str) -> None:
    at = login(new_app(), "admin", ADMIN_PASSWORD)
    at.query_params["page"] = page
    at.run()
    assert not at.exception
    assert "You do not have access" not in texts(at)
    assert [b.label for b in at.sidebar.button] == [p.title for p in PAGES.values()] + ["Log out"]


def test_admin_manages_users(engine) -> None:
    at = login(new_app(), "admin", ADMIN_PASSWORD)
    at.query_params["page"] = "users"
    at.run()
    at.text_input(key="new_username").input("drjones")
    at.selectbox(key="new_role").select("doctor")
    at.text_input(key="new_password").input("short")
    next(b for b in at.button if b.label == "Create user").click()
    at.run()
    assert any("at least 12" in e.value for e in at.error)  # too short: refused, no user
    at.text_input(key="new_username").input("drjones")
    at.text_input(key="new_password").input("jones-temporary-1")
    next(b for b in at.button if b.label == "Create user").click()
    at.run()
    created = users.authenticate(engine, "drjones", "jones-temporary-1")
    assert created.role == "doctor" and created.must_change_password

    for action, check in [
        ("Make admin", lambda u: u.role == "admin"),
        ("Disable", lambda u: not u.active),
        ("Enable", lambda u: u.active),
    ]:
        at.selectbox(key="manage_target").select("drjones")
        at.selectbox(key="manage_action").select(action)
        next(b for b in at.button if b.label == "Apply").click()
        at.run()
        assert not at.exception
        assert check(users.get_user(engine, created.id)), action
    at.selectbox(key="manage_target").select("drjones")
    at.selectbox(key="manage_action").select("Reset password")
    at.text_input(key="manage_password").input("jones-new-temporary")
    next(b for b in at.button if b.label == "Apply").click()
    at.run()
    assert users.authenticate(engine, "drjones", "jones-new-temporary").must_change_password
    with pytest.raises(users.AuthenticationError):
        users.authenticate(engine, "drjones", "jones-temporary-1")


def test_forced_password_change_after_reset(engine) -> None:
    users.set_password(engine, "drsmith", "temporary-pass-1", actor="admin", must_change=True)
    at = login(new_app(), "drsmith", "temporary-pass-1")
    assert len(at.get("file_uploader")) == 0 and "temporary password" in texts(at)
    fields = at.text_input
    fields[0].input("temporary-pass-1")
    fields[1].input("my-own-passphrase")
    fields[2].input("my-own-passphrase")
    next(b for b in at.button if b.label == "Change password").click()
    at.run()
    assert not at.exception and len(at.get("file_uploader")) == 1
    assert not users.authenticate(engine, "drsmith", "my-own-passphrase").must_change_password


def test_disabled_user_is_logged_out_on_next_action(engine) -> None:
    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    assert len(at.get("file_uploader")) == 1
    users.set_active(engine, "drsmith", False, actor="admin")
    at.run()
    assert_login_only(at)
    assert "disabled" in texts(at)


def test_idle_session_expires(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    import fracturescan.webapp.auth as auth

    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    assert len(at.get("file_uploader")) == 1
    later = auth.utcnow() + timedelta(minutes=31)
    monkeypatch.setattr(auth, "utcnow", lambda: later)
    at.run()
    assert_login_only(at)
    assert "expired" in texts(at)


def _study_rows(engine):
    with Session(engine) as s:
        studies = s.scalars(select(AuditStudy)).all()
        images = s.scalars(select(AuditImage).order_by(AuditImage.position)).all()
        return studies, images


def test_prediction_writes_audit_rows_and_feedback(engine, models_dir: Path) -> None:
    from fracturescan.inference import Predictor

    good, other, bad = png_bytes(1), png_bytes(2, (50, 90)), b"this is not an image"
    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    assert any("SYNTHETIC" in e.value for e in at.error)  # run_a is synthetic: banner shown
    at.get("file_uploader")[0].set_value([("a.png", good, "image/png"), ("broken.png", bad, "image/png"),
                                          ("b.png", other, "image/png")])
    at.run()
    next(b for b in at.button if b.label == "Analyse images").click()
    at.run()
    assert not at.exception
    assert any("broken\\.png" in e.value and "not a recognised image" in e.value for e in at.error)  # name escaped

    studies, images = _study_rows(engine)
    assert len(studies) == 1 and len(images) == 2
    study = studies[0]
    predictor = Predictor.from_checkpoint(models_dir / "run_a")
    expected = [predictor.predict_image(good), predictor.predict_image(other)]
    assert [i.sha256 for i in images] == [hashlib.sha256(b).hexdigest() for b in (good, other)]
    assert [i.probability for i in images] == pytest.approx(expected, abs=1e-5)
    assert study.model_id == "run_a" and study.model_sha256 == predictor.metadata.sha256
    assert study.username == "drsmith" and study.threshold == 0.5 and study.synthetic_model
    assert study.study_probability == pytest.approx(np.mean(expected), abs=1e-6)
    assert study.abnormal == (study.study_probability >= study.threshold)
    assert all(i.abnormal == (i.probability >= 0.5) for i in images)
    assert all(i.pixels_png is None for i in images)  # pixel storage is off by default
    assert study.created_at.tzinfo is not None

    at.radio[0].set_value("Disagree")
    at.text_area[0].input("Distal radius looks fine to me")
    next(b for b in at.button if b.label == "Save feedback").click()
    at.run()
    with Session(engine) as s:
        feedback = s.scalars(select(Feedback)).all()
    assert [(f.study_id, f.agrees, f.note, f.username) for f in feedback] == [
        (study.id, False, "Distal radius looks fine to me", "drsmith")]


def test_admin_threshold_and_pixel_storage_apply_to_analyses(engine) -> None:
    settings.set_setting(engine, settings.ACTIVE_MODEL, "run_b", actor="admin")
    at = login(new_app(), "admin", ADMIN_PASSWORD)
    at.query_params["page"] = "models"
    at.run()
    at.number_input[0].set_value(0.9)
    next(b for b in at.button if b.label == "Save threshold").click()
    at.run()
    at.toggle[0].set_value(True)
    next(b for b in at.button if b.label == "Save").click()
    at.run()
    at.query_params["page"] = "analyse"
    at.run()
    assert not any("SYNTHETIC" in e.value for e in at.error)  # run_b is not synthetic
    at.get("file_uploader")[0].set_value(("x.png", png_bytes(3), "image/png"))
    at.run()
    next(b for b in at.button if b.label == "Analyse images").click()
    at.run()
    studies, images = _study_rows(engine)
    assert studies[0].model_id == "run_b" and studies[0].threshold == pytest.approx(0.9)
    assert studies[0].abnormal == (studies[0].study_probability >= 0.9)
    assert images[0].pixels_png is not None and images[0].pixels_png.startswith(b"\x89PNG")


def test_dicom_upload_keeps_identifying_tags_out_of_the_database(engine, app_env) -> None:
    import pydicom

    data = as_wrist_dicom(hand())  # the models cover wrists; a HAND file would be refused
    ds = pydicom.dcmread(hand(), stop_before_pixels=True)
    identifying = [str(ds.get(k)) for k in ("PatientName", "PatientID", "AccessionNumber",
                                            "InstitutionName") if ds.get(k)]
    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    at.get("file_uploader")[0].set_value(("hand.dcm", data, "application/dicom"))
    at.run()
    next(b for b in at.button if b.label == "Analyse images").click()
    at.run()
    assert not at.exception and not at.error[1:]  # only the synthetic banner
    studies, images = _study_rows(engine)
    assert images[0].file_type == "dicom" and images[0].sha256 == hashlib.sha256(data).hexdigest()
    engine.dispose()
    db_path = Path(app_env["FRACTURESCAN_DB_URL"].removeprefix("sqlite:///"))
    dump = b"".join(p.read_bytes() for p in db_path.parent.glob("app.db*"))
    for value in identifying:
        assert value.encode() not in dump, value


class _FakeExplanation:
    def __init__(self, probability: float, heatmap: np.ndarray, method: str = "reference-ig") -> None:
        self.probability, self.heatmap, self.method = probability, heatmap, method


def test_heatmap_toggle_and_opacity_use_the_explain_api(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page shows explain's overlay at the chosen opacity, with its caption, and hides it."""
    import fracturescan.service as service

    calls: list[float] = []

    def explain_image(predictor, image):
        ramp = np.linspace(0, 1, image.shape[1], dtype=np.float32)[None].repeat(image.shape[0], 0)
        return _FakeExplanation(0.8, ramp)

    def overlay(image, heatmap, alpha):
        assert image.shape == heatmap.shape  # same resolution after display downscaling
        calls.append(alpha)
        return (np.stack([heatmap, image, image], -1) * 255).astype(np.uint8)

    monkeypatch.setattr(service, "explain_image", explain_image)
    monkeypatch.setattr(service, "overlay", overlay)
    at = login(new_app(), "drsmith", DOCTOR_PASSWORD)
    at.get("file_uploader")[0].set_value(("a.png", png_bytes(5, (1600, 1200)), "image/png"))
    at.run()
    next(b for b in at.button if b.label == "Analyse images").click()
    at.run()
    assert not at.exception
    assert any("explanation aid" in c.value and "not a diagnosis" in c.value for c in at.caption)
    # the caption names how the heatmap was made
    assert any("integrated gradients against a typical normal" in c.value for c in at.caption)
    assert calls == [0.4]
    studies, images = _study_rows(engine)
    # The probability is the decision rule's (from the model's logit), not the explanation's 0.8.
    assert images[0].probability != pytest.approx(0.8) and studies[0].abnormal == (images[0].probability >= 0.5)
    at.slider[0].set_value(0.75)
    at.run()
    assert calls[-1] == 0.75 and len(_study_rows(engine)[0]) == 1  # re-render, no new audit row
    at.toggle[0].set_value(False)
    at.run()
    assert not any("explanation aid" in c.value for c in at.caption)


def test_decision_text_never_prints_equal_numbers_with_a_strict_sign() -> None:
    from fracturescan.webapp.doctor import _decision_text

    assert _decision_text(0.4996, 0.5) == "normal — p = 0.4996 < threshold 0.5000"
    assert _decision_text(0.73, 0.5) == "ABNORMAL — p = 0.73 ≥ threshold 0.50"
    assert _decision_text(0.5, 0.5).startswith("ABNORMAL")  # the threshold itself is abnormal
