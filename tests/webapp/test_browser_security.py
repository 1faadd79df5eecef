"""Security review findings that need a real server and browser (Debian's Chromium, Playwright):
a stolen session id does not give a second browser the session, Streamlit's upload route is
useless without a logged-in session, and an idle screen logs itself out without a click."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from .conftest import DOCTOR_PASSWORD, png_bytes
from .test_browser import CHROMIUM, CHROMIUM_ARGS, _free_port, _wait_healthy

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium (apt-get install chromium)")

IDLE_MINUTES = 0.2  # 12 s: the idle timer re-checks every 5 s


@pytest.fixture
def server(engine, app_env, models_dir: Path, tmp_path: Path):
    """The Streamlit app on a free port with a 12-second idle timeout; yields its URL."""
    from fracturescan.appconfig import AppConfig
    from fracturescan.webapp import APP_SCRIPT

    port = _free_port()
    log = tmp_path / "server.log"
    config = AppConfig(db_url=app_env["FRACTURESCAN_DB_URL"], models_dir=models_dir, idle_minutes=IDLE_MINUTES)
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--server.enableXsrfProtection", "true"]
    env = {**os.environ, **app_env, **config.to_env(), "OMP_NUM_THREADS": "1"}
    with log.open("w") as handle:
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        os.killpg(process.pid, 15)  # the group we started, nothing else
        process.wait(timeout=20)


def _watch_session_id(page) -> dict[str, str]:
    """Fill {'id': ...} with the session id the server sends this page (NewSession message)."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    found: dict[str, str] = {}

    def frame(payload) -> None:
        if isinstance(payload, bytes):
            msg = ForwardMsg.FromString(payload)
            if msg.WhichOneof("type") == "new_session":
                found.setdefault("id", msg.new_session.initialize.session_id)

    page.on("websocket", lambda ws: ws.on("framereceived", frame))
    return found


def _login(page, url: str) -> None:
    page.goto(url)
    page.get_by_label("User name").fill("drsmith")
    page.get_by_label("Password", exact=True).fill(DOCTOR_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Analyse a study").wait_for(timeout=30_000)


def _upload(url: str, session_id: str, context) -> int:
    """PUT a file to Streamlit's upload route as ``context``'s browser would; the status."""
    xsrf = next(c["value"] for c in context.cookies() if c["name"] == "_streamlit_xsrf")
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + png_bytes(1) + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{url}/_stcore/upload_file/{session_id}/{uuid.uuid4()}", data=body, method="PUT",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "X-Xsrftoken": xsrf,
                 "Cookie": f"_streamlit_xsrf={xsrf}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


#: Reconnects with a stolen session id, as Streamlit's own client does after a network drop.
_RESUME_SCRIPT = """
const Real = window.WebSocket;
window.WebSocket = function (url, protocols) {
  if (Array.isArray(protocols) && protocols[0] === 'streamlit') {
    const xsrf = (document.cookie.match(/_streamlit_xsrf=([^;]+)/) || [])[1] || 'none';
    protocols = ['streamlit', xsrf, '%s'];
  }
  return new Real(url, protocols);
};
window.WebSocket.prototype = Real.prototype;
Object.assign(window.WebSocket, Real);
"""


def test_stolen_session_id_upload_route_and_idle_screen(server: str, engine) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            # A doctor logs in; their session id is what a proxy log would show in upload URLs.
            doctor_ctx = browser.new_context()
            doctor = doctor_ctx.new_page()
            doctor_session = _watch_session_id(doctor)
            _login(doctor, server)
            assert _upload(server, doctor_session["id"], doctor_ctx) == 204  # logged in: accepted

            # An anonymous visitor's own session cannot store uploads.
            visitor_ctx = browser.new_context()
            visitor = visitor_ctx.new_page()
            visitor_session = _watch_session_id(visitor)
            visitor.goto(server)
            visitor.get_by_role("button", name="Log in").wait_for(timeout=30_000)
            assert _upload(server, visitor_session["id"], visitor_ctx) == 403

            # A second browser connecting with the doctor's session id gets the login page.
            thief_ctx = browser.new_context()
            thief_ctx.add_init_script(_RESUME_SCRIPT % doctor_session["id"])
            thief = thief_ctx.new_page()
            thief.goto(server)
            thief.get_by_text("resumed from another browser").wait_for(timeout=30_000)
            thief.get_by_role("button", name="Log in").wait_for(timeout=30_000)  # drawn after the notice
            sync_api.expect(thief.get_by_text("Signed in as")).to_have_count(0, timeout=10_000)
            for ctx in (doctor_ctx, visitor_ctx, thief_ctx):
                ctx.close()

            # Left alone after login, the screen logs itself out (no click needed).
            idle_ctx = browser.new_context()
            idle = idle_ctx.new_page()
            _login(idle, server)
            start = time.monotonic()
            idle.get_by_text("expired after inactivity").wait_for(timeout=60_000)
            sync_api.expect(idle.get_by_text("Analyse a study")).to_have_count(0, timeout=10_000)  # stale parts go
            assert time.monotonic() - start < IDLE_MINUTES * 60 + 30
            idle_ctx.close()
        finally:
            browser.close()
