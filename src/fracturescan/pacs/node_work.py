"""The work on one study shared by the DICOM node and ``fracturescan pacs analyse``: policy
checks, analysis through the service layer, result objects, sending, and the audit event
(:class:`NodeWork`)."""

from __future__ import annotations

import dataclasses
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fracturescan.errors import FracturescanError, RoutingError
from fracturescan.pacs.analyse import analyse_study, read_header
from fracturescan.pacs.policy import IMAGE_SOP_CLASSES, refusal_reason, too_many
from fracturescan.pacs.results import Refusal, StudyResult, describe

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydicom.dataset import Dataset

    from fracturescan.pacs.node import AnalysisRecord, NodeConfig

log = logging.getLogger(__name__)


def node_user(engine: Any, username: str = "dicom-node") -> Any:
    """The user the node's analyses are recorded under: created disabled (nobody can log in as
    it) with a random password the first time."""
    from fracturescan.store import users

    existing = users.get_user_by_name(engine, username)
    if existing is not None:
        return existing
    users.create_user(engine, username, secrets.token_urlsafe(32) + "aA1!", "doctor", actor="system")
    users.set_active(engine, username, False, actor="system")
    return users.get_user_by_name(engine, username)


class NodeWork:
    """Model, database and destination of a node; :meth:`analyse` does one study."""

    def __init__(self, config: NodeConfig) -> None:
        from fracturescan.store.users import open_store

        self.config = config
        self.engine = open_store(config.db_url)
        self.user = node_user(self.engine)
        self._predictors: dict[str, Any] = {}

    def load(self) -> None:
        """Load the default model now, so a broken checkpoint stops the node at start."""
        self.current([])

    def current(self, uploads: list[tuple[str, bytes]]) -> tuple[Any, Any, float]:
        """(the model for this study's body part, chosen like the app and the API do, its loaded
        Predictor, its threshold); :class:`~fracturescan.errors.RoutingError` when no model fits."""
        from fracturescan.routing import route_study
        from fracturescan.service import active_threshold, discover_models, on_model_thread

        models = discover_models(self.config.models_dir, self.config.model_paths)
        if not models:
            raise FracturescanError("No model found: give --models DIR (training runs) or --model PATH.")
        choice = route_study(self.engine, models, uploads).choice
        key = choice.metadata.sha256
        if key not in self._predictors:
            from fracturescan.inference import Predictor

            if len(self._predictors) >= 2:  # keep the last two loaded, as the API does
                self._predictors.pop(next(iter(self._predictors)))
            self._predictors[key] = on_model_thread(Predictor.from_checkpoint, choice.path)
            log.info("DICOM node loaded model %s (%s)", choice.model_id, choice.version)
        return choice, self._predictors[key], active_threshold(self.engine, choice)

    def analyse(self, key: str, files: dict[str, Path | bytes], previous_sr: Dataset | None = None,
                previous_audit: int | None = None) -> AnalysisRecord:
        """Analyse the study's objects ({SOPInstanceUID: file or its bytes}; all of them, also
        on a re-analysis), write and send the result objects, and append the audit event."""
        from fracturescan.pacs.node import AnalysisRecord
        from fracturescan.service import on_model_thread
        from fracturescan.store.audit import log_event

        candidates, refusals, images_seen = [], [], False
        for sop_uid, source in sorted(files.items()):
            data = source.read_bytes() if isinstance(source, Path) else source
            header = read_header(data, f"{sop_uid}.dcm")
            if header is None:
                log.info("%s: an object whose header cannot be parsed is skipped", key)
                continue
            images_seen |= "Rows" in header or str(header.get("SOPClassUID", "")) in IMAGE_SOP_CLASSES
            reason = refusal_reason(header)
            if reason:
                refusals.append(Refusal(header, reason))
            else:
                candidates.append((f"{sop_uid}.dcm", data, header))
        if (reason := too_many(len(candidates))) is not None:
            refusals += [Refusal(header, reason) for _, _, header in candidates]
            candidates = []
        uploads = [(name, data) for name, data, _ in candidates]
        try:
            choice, predictor, threshold = self.current(uploads)
        except RoutingError as exc:  # mixed body parts, or a part no model covers
            refusals += [Refusal(header, str(exc)) for _, _, header in candidates]
            candidates, uploads = [], []
            choice, predictor, threshold = self.current([])
        for refusal in refusals:
            log.info("%s: refused one object: %s", key, refusal.reason)
        if candidates:
            outcome = on_model_thread(analyse_study, predictor, choice, threshold, uploads,
                                      engine=self.engine, user=self.user)
            result = dataclasses.replace(outcome.result, refusals=outcome.result.refusals + refusals)
        else:
            result = StudyResult([], None, threshold, None, choice.model_id, choice.version,
                                 choice.metadata.sha256, bool(choice.metadata.synthetic), refusals)
        if not result.images and not images_seen:
            # Only non-image objects (reports, plans...): a refusal SR could loop between AI nodes.
            log_event(self.engine, "dicom-node", "dicom_refusal", f"{key}: {len(refusals)} non-image object(s), no result")
            return AnalysisRecord(key, None, previous_audit, 0, len(refusals), [], False)
        return self._publish(key, result, previous_sr, previous_audit)

    def _publish(self, key: str, result: StudyResult, previous_sr: Dataset | None,
                 previous_audit: int | None) -> AnalysisRecord:
        from fracturescan.pacs.files import result_datasets, write_datasets
        from fracturescan.pacs.node import AnalysisRecord
        from fracturescan.store.audit import log_event

        datasets = result_datasets(result, previous_sr=previous_sr)
        folder = self.config.storage / "results" / key.split(":", 1)[1]
        paths = write_datasets(datasets, folder)
        sent, error = self._send(datasets)
        audit = f"audit #{result.audit_id}" if result.audit_id is not None else "no audit record (nothing analysed)"
        detail = (f"{key}: {audit}; {describe(result)}"
                  + (f"; supersedes audit #{previous_audit}" if previous_audit is not None else "")
                  + (f"; results sent to {self._destination()}" if sent else f"; results NOT sent: {error}" if error else ""))
        log_event(self.engine, "dicom-node", "dicom_analysis" if result.images else "dicom_refusal", detail)
        log.info("%s", detail)
        return AnalysisRecord(key, result.audit_id, previous_audit, len(result.images), len(result.refusals),
                              paths, sent, error, datasets[0])

    def _destination(self) -> str:
        return str(self.config.send_to) if self.config.send_to else str(self.config.stow_url)

    def _send(self, datasets: list[Dataset]) -> tuple[bool, str | None]:
        from fracturescan.pacs.send import SendError, send_cstore, send_stow

        if self.config.send_to is None and self.config.stow_url is None:
            return False, None
        try:
            if self.config.send_to is not None:
                send_cstore(datasets, self.config.send_to, calling_aet=self.config.aet)
            else:
                send_stow(datasets, str(self.config.stow_url))
        except SendError as exc:
            log.error("%s (the objects stay in the node's results folder)", exc)
            return False, str(exc)
        return True, None
