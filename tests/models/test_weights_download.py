"""`--weights imagenet` downloads: against a real HTTP server on 127.0.0.1, never the internet.

Only the URL is redirected (the documented mirror variable, or the URL function); the download,
hash check and atomic write are the real code.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torchvision.models as tv_models

from fracturescan.errors import WeightsNotFoundError
from fracturescan.models import build_model
from fracturescan.models import weights as weights_module
from fracturescan.models.download import DownloadError, download_verified

torch.set_num_threads(1)


@dataclass
class _Served:
    """What the local server holds: path -> bytes, how to damage it, and the requests it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    truncate: bool = False  # send half the body, then close the connection
    announce_length: bool = True
    requests: list[str] = field(default_factory=list)


def _handler(served: _Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            served.requests.append(self.path)
            body = served.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            if served.announce_length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if served.truncate else body)
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture()
def server() -> Iterator[tuple[str, _Served]]:
    served = _Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME with downloads allowed (the suite forbids them by default)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.delenv("FRACTURESCAN_OFFLINE", raising=False)
    return home / "hub" / "checkpoints"


def _state_bytes(arch: str) -> tuple[dict[str, torch.Tensor], bytes]:
    torch.manual_seed(7)
    state = tv_models.get_model(arch, weights=None).state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return state, buffer.getvalue()


def _serve_named(served: _Served, base: str, arch: str, body: bytes) -> str:
    """Serve ``body`` under a torchvision-style name carrying its real hash prefix."""
    name = f"{arch}-{hashlib.sha256(body).hexdigest()[:8]}.pth"
    served.files[f"/models/{name}"] = body
    return f"{base}/models/{name}"


def test_download_once_then_cache(server, online: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, served = server
    state, body = _state_bytes("mobilenet_v3_small")
    url = _serve_named(served, base, "mobilenet_v3_small", body)
    monkeypatch.setattr(weights_module, "imagenet_weights_url", lambda arch: url)

    model = build_model("mobilenet_v3_small", weights="imagenet")
    cached = online / url.rsplit("/", 1)[1]
    assert cached.read_bytes() == body
    assert sorted(p.name for p in online.iterdir()) == [cached.name]  # no partial file left
    features = model.features.state_dict()
    for key, value in state.items():
        if not key.startswith("classifier."):
            torch.testing.assert_close(features[key], value, rtol=0, atol=0)
    assert served.requests == [f"/models/{cached.name}"]

    build_model("mobilenet_v3_small", weights="imagenet")  # second time: from the cache
    assert len(served.requests) == 1


def test_wrong_hash_is_refused_and_nothing_kept(server, online: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, served = server
    # The documented mirror variable: torchvision's own file name, but content that is not it.
    monkeypatch.setenv("FRACTURESCAN_IMAGENET_BASE_URL", f"{base}/mirror/")
    served.files["/mirror/densenet121-a639ec97.pth"] = _state_bytes("mobilenet_v3_small")[1]
    with pytest.raises(DownloadError, match="does not start with a639ec97") as info:
        build_model("densenet121", weights="imagenet")
    assert "\n" not in str(info.value)
    assert served.requests == ["/mirror/densenet121-a639ec97.pth"]
    assert not online.exists() or not any(online.iterdir())


@pytest.mark.parametrize("announce_length", [True, False])
def test_interrupted_download_leaves_nothing(server, online: Path, monkeypatch: pytest.MonkeyPatch,
                                             announce_length: bool) -> None:
    base, served = server
    _, body = _state_bytes("mobilenet_v3_small")
    url = _serve_named(served, base, "mobilenet_v3_small", body)
    monkeypatch.setattr(weights_module, "imagenet_weights_url", lambda arch: url)
    served.truncate, served.announce_length = True, announce_length
    # With a length the shortfall is caught; without one, the hash check catches the half file.
    with pytest.raises(DownloadError, match="broke off" if announce_length else "does not start with"):
        build_model("mobilenet_v3_small", weights="imagenet")
    assert not any(online.iterdir())

    served.truncate = False  # the next attempt downloads afresh and succeeds
    build_model("mobilenet_v3_small", weights="imagenet")
    assert [p.read_bytes() for p in online.iterdir()] == [body]
    assert len(served.requests) == 2


def test_offline_never_requests(server, online: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, served = server
    monkeypatch.setenv("FRACTURESCAN_IMAGENET_BASE_URL", base)
    monkeypatch.setenv("FRACTURESCAN_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="downloads are off") as info:
        build_model("resnet18", weights="imagenet")
    assert str(online / "resnet18-f37072fd.pth") in str(info.value)
    assert served.requests == []


def test_unreachable_server_gives_the_not_cached_error(online: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("FRACTURESCAN_IMAGENET_BASE_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(WeightsNotFoundError, match="the download failed") as info:
        build_model("resnet18", weights="imagenet")
    assert str(online / "resnet18-f37072fd.pth") in str(info.value)
    assert not online.exists() or not any(online.iterdir())


def test_http_error_and_unverifiable_name(server, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_verified(f"{base}/models/gone-0123abcd.pth", tmp_path / "gone-0123abcd.pth")
    with pytest.raises(DownloadError, match="no hash"):
        download_verified(f"{base}/models/plain.pth", tmp_path / "plain.pth")
    assert list(tmp_path.iterdir()) == []
