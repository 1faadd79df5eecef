"""Sending result objects to PACS: C-STORE to a DICOM AE (``AET@host:port``) or STOW-RS to a
DICOMweb URL."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from fracturescan.errors import FracturescanError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

_AE = re.compile(r"(?P<aet>[^@\\\s]{1,16})@(?P<host>[A-Za-z0-9.\-\[\]:]+):(?P<port>\d{1,5})")


class SendError(FracturescanError):
    """The destination refused or could not be reached."""


@dataclass(frozen=True)
class AEAddress:
    """A DICOM application entity: title, host and port."""

    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "AEAddress":
        """``AET@host:port`` -> AEAddress; a clear error otherwise."""
        match = _AE.fullmatch(text.strip())
        if not match or not 0 < int(match["port"]) < 65536:
            raise FracturescanError(f"--send-to {text!r} is not AET@host:port (e.g. ORTHANC@127.0.0.1:4242).")
        return cls(match["aet"], match["host"].strip("[]"), int(match["port"]))

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


def send_cstore(datasets: Sequence[Dataset], dest: AEAddress, calling_aet: str = "FRACTURESCAN",
                timeout: float = 30.0) -> None:
    """C-STORE every dataset to ``dest`` over one association; raises :class:`SendError`
    naming the first failure."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.aet)
    if not assoc.is_established:
        raise SendError(f"{dest} did not accept an association from {calling_aet} (is this AE title "
                        "configured as a known modality there?)")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None or code not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise SendError(f"{dest} answered C-STORE of a {ds.Modality} object with status "
                                f"{'none (connection lost)' if code is None else hex(code)}")
    finally:
        assoc.release()
    log.info("sent %d object(s) to %s", len(datasets), dest)


def send_stow(datasets: Sequence[Dataset], url: str, session: object | None = None) -> None:
    """STOW-RS every dataset to the DICOMweb service at ``url``; raises :class:`SendError`."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=url, session=session) if session is not None else DICOMwebClient(url=url)
    try:
        client.store_instances(list(datasets))
    except Exception as exc:  # requests' HTTPError, connection errors...
        raise SendError(f"STOW-RS to {url} failed: {type(exc).__name__}: {str(exc)[:200]}") from exc
    log.info("stored %d object(s) at %s", len(datasets), url)
