"""Deployment self-check (``fracturescan doctor``): is this installation fit for a hospital
network? Bind addresses, TLS in front, the database, the audit trail's protection, the models
and free disk space, each reported as ok, warn or fail with what to do.

Read-only: nothing here changes the database (probes are rolled back) or the model folders.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from .notices import SYNTHETIC_MODEL_SHORT

OK, WARN, FAIL = "ok", "warn", "fail"
#: Free space below which writing audit rows, backups and logs is at risk.
DEFAULT_MIN_FREE_GB = 2.0
#: A certificate that expires sooner than this is reported.
CERT_WARN_DAYS = 14


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: str  # ok, warn or fail
    detail: str


def _listening_addresses(port: int) -> list[str]:
    """Local addresses with a socket LISTENing on TCP ``port`` (Linux /proc; [] elsewhere)."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A: TCP_LISTEN
                continue
            # /proc prints each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, width, 8))
            found.append(str(ipaddress.ip_address(raw)))
    return sorted(set(found))


def check_bind(name: str, host_port: str) -> Check:
    """Is the server that should sit behind the proxy listening on loopback only?"""
    host, _, port_text = host_port.rpartition(":")
    if not port_text.isdigit():
        return Check(f"bind {name}", FAIL, f"{host_port!r} is not HOST:PORT")
    addresses = _listening_addresses(int(port_text))
    if not addresses:
        with socket.socket() as probe:
            probe.settimeout(2)
            if probe.connect_ex((host or "127.0.0.1", int(port_text))) != 0:
                return Check(f"bind {name}", WARN, f"nothing is listening on {host_port}; is the service running?")
        addresses = [host]
    public = [a for a in addresses if not ipaddress.ip_address(a).is_loopback]
    if public:
        return Check(f"bind {name}", FAIL, f"port {port_text} listens on {', '.join(public)}: reachable without "
                                           "the TLS proxy; start it with --host 127.0.0.1")
    return Check(f"bind {name}", OK, f"port {port_text} on {', '.join(addresses)} only (behind the proxy)")


def check_tls(url: str | None, ca_file: Path | None = None, timeout: float = 10) -> list[Check]:
    """Is the public address HTTPS with a valid certificate, HSTS, and plain HTTP redirected?"""
    if not url:
        return [Check("TLS in front", WARN, "no --url given: pass the address users open "
                                            "(https://…) to check the proxy")]
    parts = urlsplit(url)
    if parts.scheme != "https":
        return [Check("TLS in front", FAIL, f"{url} is not https: put the TLS proxy (deploy/nginx) in front")]
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout,
                                    context=context) as response:
            headers = response.headers
    except urllib.error.HTTPError as exc:
        headers = exc.headers
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", exc)
        return [Check("TLS in front", FAIL, f"{url}: {reason}")]
    checks = [Check("TLS in front", OK, f"{url} answers over HTTPS with a trusted certificate")]
    hsts = headers.get("Strict-Transport-Security")
    checks.append(Check("HSTS", OK, hsts) if hsts else
                  Check("HSTS", WARN, "no Strict-Transport-Security header: browsers may fall back to HTTP"))
    days = _certificate_days_left(parts.hostname or "", parts.port or 443, context, timeout)
    if days is not None:
        checks.append(Check("certificate", OK if days >= CERT_WARN_DAYS else WARN,
                            f"expires in {days:.0f} days" + ("" if days >= CERT_WARN_DAYS else ": renew it")))
    return checks


def _certificate_days_left(host: str, port: int, context: ssl.SSLContext, timeout: float) -> float | None:
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            not_after = tls.getpeercert().get("notAfter")
    except OSError:
        return None
    if not not_after:
        return None
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), timezone.utc)
    return (expires - datetime.now(timezone.utc)).total_seconds() / 86400


def check_database(db_url: str) -> list[Check]:
    """Reachable, writable, and the audit tables refused UPDATE/DELETE by the database itself."""
    from .store.db import connect
    from .store.health import check_database as probe

    file = sqlite_path(db_url)
    if file is not None and not file.is_file():  # connecting would create an empty one
        return [Check("database", FAIL, f"no database file at {file}; start the app once or run "
                                        "`fracturescan db upgrade --db URL`")]
    engine = connect(db_url)
    try:
        status = probe(engine)
    finally:
        engine.dispose()
    where = db_url.split("@")[-1] if "@" in db_url else db_url
    if not status.reachable:
        return [Check("database", FAIL, f"{where}: cannot connect ({status.server})")]
    if status.missing_tables:
        return [Check("database", FAIL, f"{status.server} has no {', '.join(status.missing_tables)} table(s); "
                                        "run `fracturescan db upgrade --db URL`")]
    checks = [Check("database", OK if status.writable else FAIL,
                    f"{status.server}, " + ("reachable and writable" if status.writable else
                                            "reachable but NOT writable: analyses cannot be recorded"))]
    checks.append(_schema_check(db_url))
    if status.unprotected:
        missing = "; ".join(f"{table}: {', '.join(ops)}" for table, ops in sorted(status.unprotected.items()))
        checks.append(Check("append-only triggers", FAIL, f"missing ({missing}); start the app or run "
                                                          "`fracturescan db upgrade` to restore them"))
    elif status.writable and not status.refuses_changes:
        checks.append(Check("append-only triggers", FAIL, "present but an audit row could be changed"))
    else:
        refused = "UPDATE, DELETE and INSERT OR REPLACE" if db_url.startswith("sqlite") else "UPDATE, DELETE and TRUNCATE"
        checks.append(Check("append-only triggers", OK, f"audit tables refuse {refused}"
                                                        + (" (probe rolled back)" if status.writable else "")))
    return checks


def _schema_check(db_url: str) -> Check:
    """Is the database at the schema revision this version of fracturescan needs?"""
    from .store.db import connect
    from .store.schema import current_revision, head_revision

    engine = connect(db_url)
    try:
        with engine.connect() as connection:
            revision = current_revision(connection)
    finally:
        engine.dispose()
    head = head_revision()
    if revision == head:
        return Check("schema", OK, f"revision {revision} (current)")
    return Check("schema", FAIL, f"revision {revision or 'unversioned'}, this fracturescan needs {head}: back up, "
                                 "then run `fracturescan db upgrade`")


def check_models(models_dir: Path | None, model_paths: Sequence[Path] = ()) -> list[Check]:
    """Every discoverable checkpoint's weights match the SHA-256 its metadata records."""
    from .service import discover_models

    choices = discover_models(models_dir, model_paths)
    if not choices:
        return [Check("models", FAIL, f"no checkpoint found in {models_dir or list(model_paths)}")]
    checks = []
    for choice in choices:
        problem = choice.problem  # the weights against their SHA-256 (each member's, for an ensemble)
        if problem:
            checks.append(Check(f"model {choice.model_id}", FAIL, problem))
            continue
        note = f"; {SYNTHETIC_MODEL_SHORT}, not for patients" if choice.metadata.synthetic else ""
        checks.append(Check(f"model {choice.model_id}", OK, f"weights verified (sha256 "
                                                            f"{choice.metadata.sha256[:12]}…){note}"))
    return checks


def check_disk(paths: Sequence[Path], min_free_gb: float = DEFAULT_MIN_FREE_GB) -> list[Check]:
    """Free space where the database, models and backups live."""
    checks, seen = [], set()
    for path in paths:
        existing = next((p for p in (path, *path.parents) if p.is_dir()), Path("/"))  # a file's folder
        free = shutil.disk_usage(existing).free / 1e9
        key = round(free, 1), existing.stat().st_dev
        if key in seen:
            continue
        seen.add(key)
        status = OK if free >= min_free_gb else (FAIL if free < min_free_gb / 4 else WARN)
        checks.append(Check("disk space", status, f"{free:.1f} GB free at {existing}"
                                                  + ("" if status == OK else f" (want at least {min_free_gb:g} GB)")))
    return checks


def sqlite_path(db_url: str) -> Path | None:
    """The database file of an SQLite URL (None for other databases or in-memory)."""
    if not db_url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(db_url).database
    return Path(database.removeprefix("file:")) if database and database != ":memory:" else None


def run_checks(db_url: str, models_dir: Path | None, model_paths: Sequence[Path] = (),
               binds: dict[str, str] | None = None, url: str | None = None, ca_file: Path | None = None,
               min_free_gb: float = DEFAULT_MIN_FREE_GB) -> list[Check]:
    """All checks, in report order."""
    checks = [check_bind(name, host_port) for name, host_port in (binds or {}).items()]
    checks += check_tls(url, ca_file)
    checks += check_database(db_url)
    checks += check_models(models_dir, model_paths)
    disk_paths = [p for p in (sqlite_path(db_url), models_dir) if p is not None]
    checks += check_disk([p.resolve() for p in disk_paths] or [Path.cwd()], min_free_gb)
    return checks
