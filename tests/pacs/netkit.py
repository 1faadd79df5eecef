"""Test helpers for DICOM networking: small CR images made from a real sample, a pynetdicom
Storage SCP that plays the PACS, a node started in-process, and a C-STORE sender."""

from __future__ import annotations

import copy
import functools
import threading
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from tests.real_samples import pydicom_data_file

CR = "1.2.840.10008.5.1.4.1.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
#: Real uncompressed CRs in pydicom-data: a distal tibia (EXTREMITY) and a chest.
REAL_CR, REAL_CHEST = "RG3_UNCR.dcm", "RG1_UNCR.dcm"


@functools.lru_cache(maxsize=4)
def _real_pixels(side: int) -> tuple[Dataset, np.ndarray]:
    """A real CR header (the uncompressed tibia of pydicom-data) and its pixels shrunk to
    ``side`` x ``side``."""
    ds = pydicom.dcmread(pydicom_data_file(REAL_CR))
    pixels = ds.pixel_array
    rows = np.linspace(0, pixels.shape[0] - 1, side).astype(int)
    cols = np.linspace(0, pixels.shape[1] - 1, side).astype(int)
    del ds.PixelData
    return ds, np.ascontiguousarray(pixels[np.ix_(rows, cols)]).astype(np.uint16)


def small_cr(study_uid: str, n: int, *, modality: str = "CR", body_part: str = "WRIST", side: int = 96,
             sop_class: str = CR, frames: int = 1) -> Dataset:
    """A real CR header (tibia sample) with shrunk real pixels, relabelled: image ``n`` of study
    ``study_uid`` with our own patient tags, uncompressed."""
    header, pixels = _real_pixels(side)
    ds = copy.deepcopy(header)  # Dataset.copy() would share (and let us overwrite) its elements
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = f"{study_uid}.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{study_uid}.1.{n}"
    ds.PatientName, ds.PatientID = "NODE^TEST", "NODE-TEST-1"
    ds.Modality, ds.BodyPartExamined, ds.InstanceNumber = modality, body_part, n
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.PixelRepresentation = 16, 0
    if frames > 1:
        ds.NumberOfFrames = frames
        pixels = np.stack([pixels] * frames)
    ds.add_new(0x7FE00010, "OW", pixels.tobytes())  # PixelData with its VR stated (16-bit)
    return ds


class Receiver:
    """A pynetdicom Storage SCP standing in for the PACS: keeps every object it is sent."""

    def __init__(self, aet: str = "TESTPACS") -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.aet = aet
        self.received: list[Dataset] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=aet)
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", 0), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self._lock:
            self.received.append(ds)
        return 0x0000

    @property
    def address(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()


def send(port: int, items: Iterable[Dataset | Path], *, aet: str = "FRACTURESCAN", abort_after: int | None = None,
         contexts: Iterable[str] = (CR, CT, "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.1.1"),
         syntaxes: Iterable[str] = (ExplicitVRLittleEndian, "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.90"),
         ) -> list[int | None]:
    """C-STORE ``items`` over one association; the status of each (None: no answer).
    ``abort_after``: abort the association after that many objects."""
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    for context in contexts:  # one transfer syntax each: raw files need their own one accepted
        for syntax in syntaxes:  # JPEG 2000 lossless by default too, for the real samples
            ae.add_requested_context(context, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    assert assoc.is_established
    statuses: list[int | None] = []
    for i, item in enumerate(items):
        if abort_after is not None and i == abort_after:
            assoc.abort()
            return statuses
        status = assoc.send_c_store(item)
        statuses.append(getattr(status, "Status", None))
    assoc.release()
    return statuses


def echo(port: int, aet: str = "FRACTURESCAN") -> int | None:
    """C-ECHO status from the node."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return getattr(status, "Status", None)
