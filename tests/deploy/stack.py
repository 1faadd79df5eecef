"""The deployment of deploy/nginx/fracturescan.conf, for tests: a throwaway certificate, the web
app and the API on loopback ports, and nginx (not daemonised) in front of them with the repo's
site file, only its ports and certificate paths swapped."""

from __future__ import annotations

import getpass
import os
import shutil
import ssl
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from ..servers import free_port, running, wait_until_up

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "deploy" / "nginx" / "fracturescan.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
OPENSSL = shutil.which("openssl")
MIME_TYPES = Path("/etc/nginx/mime.types")


@dataclass(frozen=True)
class Stack:
    """A running proxy, app and API."""

    https: str  # https://127.0.0.1:PORT, the proxy
    http: str  # http://127.0.0.1:PORT, the proxy's redirecting plain listener
    app: str  # the app's own address (behind the proxy)
    api: str  # the API's own address
    cert: Path  # the self-signed certificate (trust anchor for clients)
    db_url: str
    root: Path  # logs and configs

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this deployment's certificate."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl CLI), valid for two days."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def site_config(ports: dict[str, int], cert: Path, key: Path) -> str:
    """The repo's site file with its listen ports, upstream ports and certificate paths replaced;
    every replaced line must be there exactly once, so the test runs what the repo ships."""
    text = SITE.read_text()
    swaps = {
        "listen 443 ssl http2;": f"listen 127.0.0.1:{ports['https']} ssl http2;",
        "listen 80;": f"listen 127.0.0.1:{ports['http']};",
        "server 127.0.0.1:8501;": f"server 127.0.0.1:{ports['app']};",
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{ports['api']};",
        "/etc/ssl/fracturescan/fullchain.pem;": f"{cert};",
        "/etc/ssl/fracturescan/privkey.pem;": f"{key};",
    }
    for old, new in swaps.items():
        assert text.count(old) == 1, f"{SITE.name} should contain {old!r} exactly once"
        text = text.replace(old, new)
    return text


def main_config(root: Path, site: Path) -> str:
    """A minimal nginx.conf around the site file: foreground, everything under ``root``."""
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""  # workers keep our identity
    temp = "".join(f"    {kind}_temp_path {root / kind};\n" for kind in ("client_body", "proxy", "fastcgi",
                                                                         "uwsgi", "scgi"))
    return (f"{user}daemon off;\nworker_processes 1;\npid {root / 'nginx.pid'};\n"
            f"error_log {root / 'error.log'} info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n    include {MIME_TYPES};\n    access_log {root / 'access.log'};\n{temp}"
            f"    include {site};\n}}\n")


@contextmanager
def start_stack(root: Path, models: Path, db_url: str, extra_env: dict[str, str]) -> Iterator[Stack]:
    """Start the API, the app and nginx; yield the :class:`Stack`; stop all three at the end."""
    if NGINX is None or not MIME_TYPES.is_file():
        pytest.skip("needs Debian's nginx (apt-get install nginx)")
    if OPENSSL is None:
        pytest.skip("needs the openssl command line tool")
    ports = {name: free_port() for name in ("https", "http", "app", "api")}
    cert, key = make_certificate(root)
    (root / "site.conf").write_text(site_config(ports, cert, key))
    (root / "nginx.conf").write_text(main_config(root, root / "site.conf"))
    check = subprocess.run([NGINX, "-t", "-c", str(root / "nginx.conf"), "-p", str(root), "-e", str(root / "error.log")],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    cli = [sys.executable, "-m", "fracturescan.cli.main"]
    common = ["--models", str(models), "--db", db_url, "--host", "127.0.0.1"]
    stack = Stack(https=f"https://127.0.0.1:{ports['https']}", http=f"http://127.0.0.1:{ports['http']}",
                  app=f"http://127.0.0.1:{ports['app']}", api=f"http://127.0.0.1:{ports['api']}",
                  cert=cert, db_url=db_url, root=root)
    env = {"OMP_NUM_THREADS": "1", **extra_env}
    with ExitStack() as servers:
        # Started together, then awaited: the three start-ups overlap.
        api = servers.enter_context(running([*cli, "serve", *common, "--port", str(ports["api"])],
                                            root / "api.log", env))
        app = servers.enter_context(running([*cli, "app", *common, "--port", str(ports["app"])],
                                            root / "app.log", env))
        proxy = servers.enter_context(running([NGINX, "-c", str(root / "nginx.conf"), "-p", str(root), "-e",
                                               str(root / "error.log")], root / "nginx.log"))
        wait_until_up(f"{stack.api}/v1/health", api, root / "api.log")
        wait_until_up(f"{stack.app}/_stcore/health", app, root / "app.log")
        wait_until_up(f"{stack.https}/_stcore/health", proxy, root / "nginx.log", context=stack.ssl_context())
        yield stack
