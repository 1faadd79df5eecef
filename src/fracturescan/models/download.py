"""Download a weights file once, verified and atomically, into a cache folder.

The file is streamed into a uniquely named ``*.partial`` file next to its destination, its
SHA-256 compared with the hash prefix that torchvision puts in every weight file's name (the
check ``torch.hub`` makes), and only then renamed into place with :func:`os.replace`. A
download that is interrupted, truncated or corrupted therefore never leaves a file at the
destination, and a later run never trusts half a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import uuid
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from tqdm.auto import tqdm

from fracturescan.errors import FracturescanError

logger = logging.getLogger(__name__)

#: Set to 1 (or true/yes) to forbid every download, as ``--offline`` does.
OFFLINE_ENV = "FRACTURESCAN_OFFLINE"

# torch.hub's rule: the hex digits between the last "-" and the extension are a SHA-256 prefix.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,64})\.")
_CHUNK = 1 << 16


class DownloadError(FracturescanError):
    """A download failed (network, truncation or hash mismatch); nothing was written."""


class NetworkUnavailableError(DownloadError):
    """The server could not be reached at all (no network, DNS failure, refused, timed out)."""


def offline_requested() -> bool:
    """True when ``FRACTURESCAN_OFFLINE`` asks for no network access."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def hash_prefix_of(name: str) -> str | None:
    """The SHA-256 prefix torchvision encodes in a file name (``densenet121-a639ec97.pth``)."""
    match = _HASH_IN_NAME.search(name)
    return match.group(1) if match else None


def download_verified(url: str, dest: Path, *, timeout: float = 30.0, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` with a progress bar, checking length and hash; atomic.

    The expected hash is the prefix in the URL's file name, as torch.hub checks it; a URL
    without one is refused, since the file could not be verified.

    Raises:
        NetworkUnavailableError: the server cannot be reached.
        DownloadError: the transfer broke off, was shorter than announced, or the content's
            SHA-256 does not start with the expected prefix. No file is left behind.
    """
    name = Path(urlparse(url).path).name
    expected = hash_prefix_of(name)
    if expected is None:
        raise DownloadError(f"refusing to download {url}: its file name carries no hash to check it against")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.partial")
    try:
        digest, size = _stream(url, partial, timeout=timeout, progress=progress)
        if not digest.startswith(expected):
            raise DownloadError(
                f"downloaded {url} ({size} bytes) but its SHA-256 {digest[:16]}… does not start with "
                f"{expected} from its name: the file is corrupt or not the published one; nothing was kept"
            )
        os.replace(partial, dest)  # atomic on one file system: dest is whole or absent
    finally:
        partial.unlink(missing_ok=True)
    logger.info("Downloaded %s to %s (%d bytes, SHA-256 verified)", url, dest, size)
    return dest


def _stream(url: str, target: Path, *, timeout: float, progress: bool) -> tuple[str, int]:
    request = Request(url, headers={"User-Agent": "fracturescan"})
    digest = hashlib.sha256()
    received, total = 0, None
    try:
        with urlopen(request, timeout=timeout) as response, target.open("wb") as out:
            announced = response.headers.get("Content-Length")
            if announced and announced.isdigit():
                total = int(announced)
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=Path(urlparse(url).path).name, disable=not progress or None, leave=False) as bar:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
    except HTTPError as exc:  # the server answered, with an error status
        raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except URLError as exc:  # before any byte: DNS, refused, no route
        raise NetworkUnavailableError(f"cannot reach {url}: {exc.reason}") from exc
    except (TimeoutError, socket.timeout) as exc:
        raise NetworkUnavailableError(f"downloading {url} timed out after {timeout:g} s") from exc
    except OSError as exc:  # the connection broke mid-transfer, or the disk is full
        raise DownloadError(f"downloading {url} broke off after {received} bytes: {exc}") from exc
    if total is not None and received != total:
        # http.client returns a short body without error when the peer closes early.
        raise DownloadError(f"downloading {url} broke off: {received} of {total} bytes received")
    return digest.hexdigest(), received
