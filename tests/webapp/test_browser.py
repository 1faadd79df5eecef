"""Real-browser test: Playwright drives Debian's Chromium against ``fracturescan app``.

Starts the app on a free port with a temporary database and a tiny checkpoint, logs in as a
doctor at desktop (1280 px) and phone (390 px) widths, uploads a DICOM and a PNG, waits for the
result and heatmap, saves screenshots to ``$FRACTURESCAN_SCREENSHOTS`` and checks the audit rows.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..real_samples import HAND
from .conftest import ADMIN_PASSWORD, DOCTOR_PASSWORD, as_wrist_dicom, png_bytes

CHROMIUM = Path("/usr/bin/chromium")
DICOM = HAND
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium (apt-get install chromium)"),
    pytest.mark.skipif(not DICOM.is_file(), reason=f"real sample {HAND} missing from the checkout"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the app exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the app did not start in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(engine, app_env, models_dir: Path, tmp_path: Path):
    """``fracturescan app`` running on a free port; yields its URL."""
    port = _free_port()
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "fracturescan.cli.main", "app", "--models", str(models_dir),
           "--db", app_env["FRACTURESCAN_DB_URL"], "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, **app_env, "OMP_NUM_THREADS": "2"}
    with log.open("w") as handle:
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        # Streamlit runs as our child's child: end the whole group we started, nothing else.
        os.killpg(process.pid, 15)
        process.wait(timeout=20)


def _analyse(page, url: str, files: list[Path], heatmaps: bool, expect) -> float:
    """Log in, upload, analyse; return seconds from the click to the heatmap (or result)."""
    page.goto(url)
    page.get_by_label("User name").fill("drsmith")
    page.get_by_label("Password", exact=True).fill(DOCTOR_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Analyse a study").wait_for(timeout=30_000)
    page.locator("input[type=file]").set_input_files([str(f) for f in files])
    button = page.get_by_role("button", name="Analyse images", exact=True)
    expect(button).to_be_enabled(timeout=30_000)  # enabled once the uploads reached the server
    start = time.perf_counter()
    button.click()
    page.get_by_text("Study (2 image(s))").wait_for(timeout=60_000)
    marker = "explanation aid" if heatmaps else "Heatmaps are unavailable"
    page.get_by_text(marker).first.wait_for(timeout=60_000)
    elapsed = time.perf_counter() - start
    page.wait_for_timeout(500)  # let images finish painting before the screenshot
    return elapsed


def _screenshot_whole_app(page, viewport: dict[str, int], path: Path) -> None:
    """Streamlit scrolls inside its own container: grow the window to its content, then shoot."""
    height = page.evaluate(
        "Math.max(...[...document.querySelectorAll('[data-testid=stMain], [data-testid=stAppViewContainer]')]"
        ".map(e => e.scrollHeight), document.documentElement.scrollHeight)")
    page.set_viewport_size({"width": viewport["width"], "height": min(int(height) + 40, 8000)})
    page.wait_for_timeout(400)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(viewport)


def _admin_audit_page(browser, url: str, shots: Path) -> None:
    """Screenshot the login page, then the admin's audit log showing the 4 image rows."""
    viewport = {"width": 1280, "height": 900}
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.goto(f"{url}/?page=audit")
    page.get_by_role("button", name="Log in").wait_for(timeout=30_000)
    _screenshot_whole_app(page, viewport, shots / "login_1280.png")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("4 image row(s)").wait_for(timeout=30_000)
    page.wait_for_timeout(800)  # the data grid paints after the text
    _screenshot_whole_app(page, viewport, shots / "admin_audit_1280.png")
    context.close()


def test_browser_login_upload_screenshots_and_audit(server: str, engine, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    from fracturescan.store.db import AuditImage, AuditStudy

    heatmaps = True  # explanations are a core part of the package
    shots = Path(os.environ.get("FRACTURESCAN_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    png = tmp_path / "wrist_view2.png"
    png.write_bytes(png_bytes(7, (300, 400)))
    dicom = tmp_path / "wrist_view1.dcm"
    dicom.write_bytes(as_wrist_dicom(DICOM))
    timings = {}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for name, viewport in [("desktop_1280", {"width": 1280, "height": 900}),
                                   ("phone_390", {"width": 390, "height": 844})]:
                context = browser.new_context(viewport=viewport)
                page = context.new_page()
                try:
                    timings[name] = _analyse(page, server, [dicom, png], heatmaps, sync_api.expect)
                finally:
                    _screenshot_whole_app(page, viewport, shots / f"{name}.png")
                # On a phone nothing may stick out sideways: the page must not scroll horizontally.
                overflow = page.evaluate("document.documentElement.scrollWidth")
                assert overflow <= viewport["width"] + 1, f"{name}: page is {overflow}px wide"
                context.close()
            _admin_audit_page(browser, server, shots)
        finally:
            browser.close()
    print(f"analyse->result seconds: {timings}; screenshots in {shots}")

    expected = [hashlib.sha256(dicom.read_bytes()).hexdigest(), hashlib.sha256(png.read_bytes()).hexdigest()]
    with Session(engine) as s:
        studies = s.scalars(select(AuditStudy).order_by(AuditStudy.id)).all()
        images = s.scalars(select(AuditImage).order_by(AuditImage.study_id, AuditImage.position)).all()
    assert len(studies) == 2 and len(images) == 4
    for study in studies:
        rows = [i for i in images if i.study_id == study.id]
        assert [i.sha256 for i in rows] == expected
        assert [i.file_type for i in rows] == ["dicom", "png"]
        assert study.username == "drsmith" and study.model_id == "run_a" and study.threshold == 0.5
        mean = sum(i.probability for i in rows) / 2
        assert study.study_probability == pytest.approx(mean, abs=1e-9)
        assert study.abnormal == (mean >= 0.5)
    # The same bytes and model give the same probabilities in both sessions.
    assert [i.probability for i in images[:2]] == pytest.approx([i.probability for i in images[2:]])
