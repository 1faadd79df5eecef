"""A throwaway Orthanc PACS (Debian packages ``orthanc`` and ``orthanc-dicomweb``) for the tests.

Orthanc 1.10 has no option to bind to one address, so the tests run it (and everything that
talks to it) inside a new network namespace whose only interface is loopback
(``unshare --net``): nothing outside the machine, nor on it, can reach it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AET = "ORTHANC"


def missing() -> str | None:
    """Why Orthanc cannot run here, or None."""
    if not Path(ORTHANC).is_file():
        return "Orthanc not installed (Debian package orthanc; .ci/run installs it)"
    if not DICOMWEB_PLUGIN.is_file():
        return "Orthanc's DICOMweb plugin not installed (Debian package orthanc-dicomweb; .ci/run installs it)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip missing: cannot give Orthanc a loopback-only network namespace"
    probe = subprocess.run(["unshare", "--net", "--map-root-user", "true"], capture_output=True)
    if probe.returncode != 0:
        return "cannot create a network namespace (unshare --net) for a loopback-only Orthanc"
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def orthanc(folder: Path, modalities: dict[str, tuple[str, str, int]] | None = None,
            lua_scripts: tuple[Path, ...] = ()) -> Iterator[dict[str, object]]:
    """Start Orthanc with a generated configuration (storage in ``folder``, loopback ports,
    DICOMweb on, ``modalities`` {name: (AET, host, port)}, Lua scripts); yields
    {"http": base URL, "dicomweb": URL, "aet", "dicom_port"}."""
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "fracturescan-test", "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"), "HttpPort": http_port, "DicomPort": dicom_port,
        "DicomAet": AET, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {name: list(entry) for name, entry in (modalities or {}).items()},
        "LuaScripts": [str(script) for script in lua_scripts],
        "HttpsVerifyPeers": False, "StableAge": 1, "HttpTimeout": 60,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/system", timeout=2) as reply:
                    json.load(reply)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start; see {folder / 'orthanc.log'}") from None
                time.sleep(0.2)
        yield {"http": base, "dicomweb": f"{base}/dicom-web", "aet": AET, "dicom_port": dicom_port}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def upload(base: str, data: bytes) -> str:
    """POST one DICOM file to Orthanc's REST API; returns its Orthanc id."""
    request = urllib.request.Request(f"{base}/instances", data=data, method="POST",
                                     headers={"Content-Type": "application/dicom"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return str(json.load(reply)["ID"])
