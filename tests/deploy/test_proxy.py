"""Deployment as a tested path: nginx with deploy/nginx/fracturescan.conf in front of the web
app and the API, everything driven THROUGH THE PROXY OVER HTTPS.

One stack per module (starting Streamlit, the API and nginx takes ~15 s). The tests run in file
order; the rate-limit test is last because it spends the per-client budget.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("fastapi")

from ..webapp.conftest import ADMIN_PASSWORD, DOCTOR_PASSWORD, make_checkpoint, png_bytes  # noqa: E402
from .stack import Stack, start_stack  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SECURITY_HEADERS = ("strict-transport-security", "x-content-type-options", "x-frame-options",
                    "content-security-policy", "referrer-policy")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """The proxied deployment with a doctor, an admin and the doctor's API key."""
    from fracturescan.store import apikeys, users
    from fracturescan.store.db import make_engine

    root = tmp_path_factory.mktemp("deploy")
    models = root / "models"
    make_checkpoint(models / "run_a" / "best", synthetic=True, threshold=0.5)
    db_url = f"sqlite:///{root / 'app.db'}"
    engine = make_engine(db_url)
    users.ensure_admin(engine, ADMIN_PASSWORD)
    users.create_user(engine, "drsmith", DOCTOR_PASSWORD, "doctor", actor="test")
    _, key = apikeys.create_key(engine, "drsmith", "proxy test", actor="test")
    engine.dispose()
    with start_stack(root, models, db_url, {"FRACTURESCAN_ADMIN_PASSWORD": ADMIN_PASSWORD}) as running_stack:
        yield running_stack, key


def _request(stack: Stack, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTPS request to the proxy, verifying its certificate against the test's own."""
    conn = http.client.HTTPSConnection(stack.https.removeprefix("https://"), context=stack.ssl_context(),
                                       timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "fracturescan-test-boundary"
    parts = b"".join(
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
        f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for name, data in files)
    return parts + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _audit_count(db_url: str) -> int:
    from sqlalchemy import create_engine, func, select

    from fracturescan.store.db import AuditStudy

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(AuditStudy)).scalar_one()
    finally:
        engine.dispose()


def test_tls_only_with_security_headers(stack) -> None:
    stack, _ = stack
    status, headers, body = _request(stack, "GET", "/")
    assert status == 200 and b"<html" in body.lower()
    for name in SECURITY_HEADERS:
        assert name in headers, f"{name} missing from the proxy's answer"
    assert "max-age=31536000" in headers["strict-transport-security"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["server"] == "nginx"  # no version
    # The same headers on API answers and on errors.
    status, headers, _ = _request(stack, "GET", "/v1/model")
    assert status == 401 and all(name in headers for name in SECURITY_HEADERS)
    assert _request(stack, "GET", "/metrics")[0] == 404  # monitoring stays on the inside
    # Plain HTTP only redirects to HTTPS.
    conn = http.client.HTTPConnection(stack.http.removeprefix("http://"), timeout=10)
    conn.request("GET", "/v1/health")
    redirect = conn.getresponse()
    assert redirect.status == 301 and redirect.getheader("location", "").startswith("https://")
    conn.close()
    # A client that does not trust the certificate is refused: it is really TLS.
    with pytest.raises(ssl.SSLCertVerificationError):
        http.client.HTTPSConnection(stack.https.removeprefix("https://"), timeout=10,
                                    context=ssl.create_default_context()).request("GET", "/")


def test_api_with_a_key_through_the_proxy(stack) -> None:
    stack, key = stack
    before = _audit_count(stack.db_url)
    body, content_type = _multipart([("view1.png", png_bytes(3)), ("view2.png", png_bytes(4))])
    status, headers, answer = _request(stack, "POST", "/v1/predict", body,
                                       {"Authorization": f"Bearer {key}", "Content-Type": content_type})
    assert status == 200, answer
    result = json.loads(answer)
    probabilities = [image["probability"] for image in result["images"]]
    assert result["study"]["probability"] == pytest.approx(sum(probabilities) / 2)
    assert _audit_count(stack.db_url) == before + 1
    status, _, answer = _request(stack, "POST", "/v1/predict", body, {"Content-Type": content_type})
    assert status == 401 and "error" in json.loads(answer)


def test_oversized_uploads_are_refused_by_the_proxy(stack) -> None:
    stack, key = stack
    # Declared sizes over the limits: nginx answers before a byte of the body is read.
    for path, size in (("/v1/predict", 250_000_000), ("/_stcore/upload_file/x/y", 70_000_000)):
        conn = http.client.HTTPSConnection(stack.https.removeprefix("https://"), context=stack.ssl_context(),
                                           timeout=30)
        conn.putrequest("POST" if path.startswith("/v1") else "PUT", path)
        for name, value in (("Authorization", f"Bearer {key}"), ("Content-Length", str(size)),
                            ("Content-Type", "multipart/form-data; boundary=x")):
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413, path
        text = response.read()
        conn.close()
        if path.startswith("/v1"):  # API clients get the API's error shape from the proxy too
            assert "larger than the proxy accepts" in json.loads(text)["error"]
    # A chunked upload with no declared size is counted as it streams and cut off at the limit.
    conn = http.client.HTTPSConnection(stack.https.removeprefix("https://"), context=stack.ssl_context(),
                                       timeout=60)
    chunk = b"\0" * 1_000_000
    try:
        conn.request("PUT", "/_stcore/upload_file/x/y", body=(chunk for _ in range(70)), encode_chunked=True,
                     headers={"Content-Type": "application/octet-stream"})
        status = conn.getresponse().status
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
        status = 413  # nginx closed the connection mid-body; its log says why
        assert "client intended to send too large chunked body" in (stack.root / "error.log").read_text()
    finally:
        conn.close()
    assert status == 413
    assert "413" in (stack.root / "access.log").read_text()


def test_browser_login_and_analysis_through_the_proxy(stack, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    stack, _ = stack
    before = _audit_count(stack.db_url)
    image = tmp_path / "view.png"
    image.write_bytes(png_bytes(9, (200, 240)))
    violations: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            # The test's certificate is self-signed: the browser is told to accept it, as a
            # hospital's browsers trust the hospital's CA.
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto(stack.https)
            page.get_by_label("User name").fill("drsmith")
            page.get_by_label("Password", exact=True).fill(DOCTOR_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.get_by_text("Analyse a study").wait_for(timeout=30_000)
            page.locator("input[type=file]").set_input_files([str(image)])
            button = page.get_by_role("button", name="Analyse images", exact=True)
            sync_api.expect(button).to_be_enabled(timeout=30_000)
            button.click()
            page.get_by_text("Study (1 image(s))").wait_for(timeout=60_000)
            context.close()
        finally:
            browser.close()
    assert not violations, (f"{violations}: the proxy's Content-Security-Policy must allow Streamlit's inline "
                            f"scripts; their hashes now: {_streamlit_inline_script_hashes()}")
    assert _audit_count(stack.db_url) == before + 1
    log = (stack.root / "access.log").read_text()
    assert "/_stcore/stream" in log and "/_stcore/upload_file/" in log  # it all went through nginx


def test_doctor_checks_the_running_deployment(stack) -> None:
    from fracturescan.doctor import FAIL, OK, check_tls, run_checks

    stack, _ = stack
    binds = {"app": stack.app.removeprefix("http://"), "api": stack.api.removeprefix("http://")}
    checks = {c.name: c for c in run_checks(stack.db_url, stack.root / "models", binds=binds,
                                            url=stack.https + "/", ca_file=stack.cert, min_free_gb=0.001)}
    assert {name: c.status for name, c in checks.items()} == {
        "bind app": OK, "bind api": OK, "TLS in front": OK, "HSTS": OK, "certificate": "warn",  # 2-day test cert
        "database": OK, "schema": OK, "append-only triggers": OK, "model run_a": OK, "disk space": OK}
    assert "max-age=31536000" in checks["HSTS"].detail
    assert check_tls(stack.http + "/")[0].status == FAIL  # plain HTTP is not TLS in front
    untrusted = check_tls(stack.https + "/")[0]  # the system's CAs do not know the test's certificate
    assert untrusted.status == FAIL and "CERTIFICATE_VERIFY_FAILED" in untrusted.detail


def _streamlit_inline_script_hashes() -> list[str]:
    import base64
    import hashlib
    import re

    import streamlit

    index = (Path(streamlit.__file__).parent / "static" / "index.html").read_text()
    return [f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
            for script in re.findall(r"<script>(.*?)</script>", index, re.S)]


def test_rate_limit_on_uploads(stack) -> None:
    stack, _ = stack
    body, content_type = _multipart([("v.png", png_bytes(1))])
    statuses = []
    start = time.monotonic()
    for _ in range(45):  # a new connection each time: the limit is per address, not per connection
        status, _, text = _request(stack, "POST", "/v1/predict", body, {"Content-Type": content_type,
                                                                         "Authorization": "Bearer fsk_wrong"})
        statuses.append(status)
        if status == 429:
            assert "Too many requests" in json.loads(text)["error"]
    elapsed = time.monotonic() - start
    # burst 30, then one a second: at most 31 + elapsed seconds' worth get through.
    assert set(statuses) <= {401, 429} and statuses.count(429) >= 1
    assert statuses.count(401) <= 31 + int(elapsed) + 1 and statuses.count(429) >= 45 - 32 - int(elapsed)
