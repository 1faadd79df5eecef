"""The DICOM node: a Storage SCP that receives radiographs, analyses each study once it has
been quiet for a while, and sends the results (SR + Secondary Captures) back to PACS.

* Every received object is written to disk (and fsync'ed) before the C-STORE response, so an
  acknowledged image is never lost; objects whose header cannot be parsed are answered with a
  failure status (0xC210) instead.
* Objects are grouped by StudyInstanceUID; a study is analysed when no new object of it arrived
  for ``quiet_seconds``. An object arriving after the analysis triggers a re-analysis of the
  whole study, whose SR names the first one as its predecessor; both are audited.
* What must not be analysed (see :mod:`fracturescan.pacs.policy`) is refused with a reason in
  the log (never a patient identifier) and, when the study holds an image, in the SR.
* Every analysis lands in the audit trail of the app and the API, by the (disabled) user
  ``dicom-node``, and an event links it to the PACS study by a keyed hash of its UID.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fracturescan.data.dicom_dataset import safe_uid
from fracturescan.pacs.analyse import read_header
from fracturescan.pacs.results import MANUFACTURER
from fracturescan.pacs.send import AEAddress
from fracturescan.pacs.studykey import study_key

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

NODE_USER = "dicom-node"
#: C-STORE status: processing failure / cannot understand.
CANNOT_UNDERSTAND = 0xC210
OUT_OF_RESOURCES = 0xA700


@dataclass
class NodeConfig:
    """How the node listens, where it keeps files, and where results go."""

    storage: Path
    db_url: str
    key: bytes
    models_dir: Path | None = None
    model_paths: tuple[Path, ...] = ()
    aet: str = "FRACTURESCAN"
    host: str = "127.0.0.1"
    port: int = 11112
    quiet_seconds: float = 10.0
    #: A study idle this long after its analysis leaves memory; its files stay on disk, and an
    #: image arriving later re-analyses it with every stored image (as after a restart).
    forget_seconds: float = 24 * 3600.0
    send_to: AEAddress | None = None
    stow_url: str | None = None


@dataclass
class _Study:
    """What the node knows about one study (in memory; the files are on disk)."""

    key: str
    files: dict[str, Path] = field(default_factory=dict)  # SOPInstanceUID -> file
    last_received: float = 0.0
    pending: bool = False
    analyses: int = 0
    busy: bool = False  # being analysed now
    audit_id: int | None = None
    previous_sr: Dataset | None = None


@dataclass(frozen=True)
class AnalysisRecord:
    """What one analysis produced (kept for tests and the node's log)."""

    study_key: str
    audit_id: int | None
    supersedes: int | None
    n_analysed: int
    n_refused: int
    objects: list[Path]
    sent: bool
    error: str | None = None
    sr: Any = None  # the SR dataset written (a later re-analysis names it as predecessor)


class DicomNode:
    """A running DICOM node (:meth:`start`, :meth:`stop`)."""

    def __init__(self, config: NodeConfig, on_analysis: Callable[[AnalysisRecord], None] | None = None) -> None:
        from fracturescan.pacs.node_work import NodeWork

        self.config = config
        self.incoming = config.storage / "incoming"
        self.results = config.storage / "results"
        self._studies: dict[str, _Study] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._scheduler: threading.Thread | None = None
        self.records: deque[AnalysisRecord] = deque(maxlen=1000)  # the latest, for tests and logs
        self.analyses = 0
        self._on_analysis = on_analysis
        self.work = NodeWork(config)

    # ------------------------------------------------------------------ network
    def start(self) -> None:
        """Load the model, then listen (returns at once; the server runs in threads)."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        self.incoming.mkdir(parents=True, exist_ok=True)
        self.work.load()
        ae = AE(ae_title=self.config.aet)
        ae.maximum_pdu_size = 1 << 20
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 60
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_ABORTED, self._on_abort)]
        self._server = ae.start_server((self.config.host, self.config.port), block=False, evt_handlers=handlers)
        self._scheduler = threading.Thread(target=self._schedule, name="dicom-node-scheduler", daemon=True)
        self._scheduler.start()
        log.info("DICOM node %s listening on %s:%d (quiet period %.1f s)", self.config.aet, self.config.host,
                 self.config.port, self.config.quiet_seconds)

    def stop(self) -> None:
        """Stop listening and analysing (pending studies stay on disk)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._scheduler is not None:
            self._scheduler.join(timeout=30)

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        return int(self._server.server_address[1]) if self._server is not None else self.config.port

    def _on_abort(self, event: Any) -> None:
        log.info("association from %s aborted; objects received before it are kept", _peer(event))

    def _on_store(self, event: Any) -> int:
        """Write the object to disk, then acknowledge it; refuse what cannot be parsed."""
        try:
            data = event.encoded_dataset()
        except Exception as exc:  # a dataset pynetdicom could not encode back: never acknowledged
            log.warning("refused an object from %s: unreadable dataset (%s)", _peer(event), type(exc).__name__)
            return CANNOT_UNDERSTAND
        header = read_header(data, "received object")
        study_uid = safe_uid(header.get("StudyInstanceUID", "")) if header is not None else "<invalid UID>"
        sop_uid = safe_uid(header.get("SOPInstanceUID", "")) if header is not None else "<invalid UID>"
        if header is None or "<" in study_uid or "<" in sop_uid:
            log.warning("refused an object from %s: %s", _peer(event),
                        "its header cannot be parsed" if header is None else "no valid Study/SOP Instance UID")
            return CANNOT_UNDERSTAND
        key = study_key(self.config.key, study_uid)
        folder = self.incoming / key.split(":", 1)[1]
        # Our own results coming back (a PACS routing everything) are kept apart, never analysed.
        ours = str(header.get("Manufacturer", "")) == MANUFACTURER
        with self._lock:
            study = self._studies.get(study_uid)
            if study is None:  # new, forgotten, or received before a restart: what is on disk counts
                study = self._studies[study_uid] = _Study(key, files=_stored_files(folder))
            stored = None if ours else study.files.get(sop_uid)
        if stored is not None and _same_content(stored, data):
            # A PACS re-sending what it already sent (a retry, or a routing rule that fires
            # again when our results arrive): acknowledged, but not a new image to analyse.
            log.info("%s: an object received again, unchanged; not re-analysed", key)
            return 0x0000
        try:
            path = _write_durably(folder / "returned" if ours else folder, f"{sop_uid}.dcm", data)
        except OSError as exc:
            log.error("could not store an object of %s: %s", key, exc.strerror)
            return OUT_OF_RESOURCES
        if ours:
            log.info("stored one of fracturescan's own result objects for %s; not analysed", key)
            return 0x0000
        with self._lock:
            study = self._studies.setdefault(study_uid, study)
            study.files[sop_uid] = path
            study.last_received = time.monotonic()
            study.pending = True
        log.info("received %s object for %s (%d in the study)", header.get("Modality", "?"), key, len(study.files))
        return 0x0000

    # ------------------------------------------------------------------ analysis
    def _schedule(self) -> None:
        """Analyse each study once it has been quiet for the configured period."""
        while not self._stop.wait(0.1):
            now = time.monotonic()
            with self._lock:
                due = [(uid, s) for uid, s in self._studies.items()
                       if s.pending and now - s.last_received >= self.config.quiet_seconds]
                for _, study in due:
                    study.pending = False
                idle = [uid for uid, s in self._studies.items() if not s.pending and not s.busy
                        and now - s.last_received >= self.config.forget_seconds]
                for uid in idle:  # bounded memory on a node that runs for months
                    del self._studies[uid]
            for uid, study in due:
                self._analyse(uid, study)

    def _analyse(self, study_uid: str, study: _Study) -> None:
        with self._lock:
            files = dict(study.files)
            study.busy = True
        try:
            record = self.work.analyse(study.key, dict(files), study.previous_sr, study.audit_id)
        except Exception as exc:  # the node keeps serving whatever one study does
            log.exception("analysis of %s failed: %s", study.key, type(exc).__name__)
            record = AnalysisRecord(study.key, None, study.audit_id, 0, 0, [], False, type(exc).__name__)
        else:
            if record.sr is not None:
                study.audit_id = record.audit_id if record.audit_id is not None else study.audit_id
                study.previous_sr = record.sr
        with self._lock:
            study.analyses += 1
            study.busy = False
            study.last_received = max(study.last_received, time.monotonic())  # idle from now on
        self.records.append(record)
        self.analyses += 1
        if self._on_analysis is not None:
            self._on_analysis(record)

    def pending(self) -> int:
        """Studies with objects received since their last analysis (waiting for quiet)."""
        with self._lock:
            return sum(study.pending for study in self._studies.values())

    def known_studies(self) -> int:
        """Studies held in memory (the others are only on disk)."""
        with self._lock:
            return len(self._studies)

    def wait_for(self, n_records: int, timeout: float = 60.0) -> list[AnalysisRecord]:
        """Block until at least ``n_records`` analyses finished (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while self.analyses < n_records and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.records)


def _peer(event: Any) -> str:
    try:
        return f"{event.assoc.requestor.ae_title}@{event.assoc.requestor.address}"
    except Exception:
        return "a peer"


def _stored_files(folder: Path) -> dict[str, Path]:
    """{SOPInstanceUID: file} of the objects already stored for a study (none if new)."""
    return {path.stem: path for path in folder.glob("*.dcm")} if folder.is_dir() else {}


def _same_content(path: Path, data: bytes) -> bool:
    """True when the file at ``path`` holds exactly ``data``."""
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _write_durably(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/name`` through a temporary file, fsync'ed, then renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    partial = folder / f".{name}.partial"
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, target)
    return target
