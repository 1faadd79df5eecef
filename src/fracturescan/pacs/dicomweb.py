"""Pull studies from PACS over DICOMweb (QIDO-RS to find, WADO-RS to fetch), analyse them and
store the results back (STOW-RS): ``fracturescan pacs analyse``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from fracturescan.errors import FracturescanError
from fracturescan.pacs.results import MANUFACTURER
from fracturescan.pacs.sr import SERIES_DESCRIPTION

if TYPE_CHECKING:  # pragma: no cover - typing only
    from fracturescan.pacs.node import AnalysisRecord
    from fracturescan.pacs.node_work import NodeWork

log = logging.getLogger(__name__)

_STUDY_UID, _SERIES_UID, _SOP_UID = "0020000D", "0020000E", "00080018"
_SERIES_DESCRIPTION, _MODALITY = "0008103E", "00080060"


def client(url: str) -> Any:
    """A DICOMweb client for ``url`` (e.g. http://pacs:8042/dicom-web)."""
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url=url.rstrip("/"))


def _value(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None


def _call(what: str, url: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one DICOMweb request; failures become one clear line."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # requests' HTTPError, ConnectionError...
        raise FracturescanError(f"{what} at {url} failed: {type(exc).__name__}: {str(exc)[:200]}") from exc


def already_analysed(web: Any, study_uid: str) -> bool:
    """True when the study already holds a fracturescan result series."""
    series = _call("QIDO-RS series search", web.url_prefix, web.search_for_series, study_instance_uid=study_uid)
    return any(_value(s, _SERIES_DESCRIPTION) == SERIES_DESCRIPTION for s in series)


def pull_study(web: Any, study_uid: str) -> dict[str, bytes]:
    """{SOPInstanceUID: Part 10 bytes} of the study's objects, without fracturescan's own results."""
    from fracturescan.pacs.files import to_bytes

    found = _call("QIDO-RS instance search", web.url_prefix, web.search_for_instances, study_instance_uid=study_uid)
    if not found:
        raise FracturescanError(f"No instances of study {study_uid} at {web.url_prefix}: check --study and --url.")
    objects = {}
    for item in found:
        series, sop = _value(item, _SERIES_UID), _value(item, _SOP_UID)
        if not (series and sop):
            continue
        ds = _call("WADO-RS retrieve", web.url_prefix, web.retrieve_instance, study_uid, series, sop)
        if str(ds.get("Manufacturer", "")) == MANUFACTURER:
            continue  # our own SR/SC from an earlier run
        objects[sop] = to_bytes(ds)
    return objects


@dataclass(frozen=True)
class WorklistQuery:
    """Which studies ``pacs analyse`` runs over (QIDO-RS study search)."""

    since: str | None = None  # YYYYMMDD
    until: str | None = None
    modality: str = "CR"
    limit: int = 500


def find_studies(web: Any, query: WorklistQuery) -> list[str]:
    """StudyInstanceUIDs matching the date range and modality."""
    filters: dict[str, str] = {"ModalitiesInStudy": query.modality}
    if query.since or query.until:
        filters["StudyDate"] = f"{query.since or ''}-{query.until or ''}"
    studies = _call("QIDO-RS study search", web.url_prefix, web.search_for_studies,
                    search_filters=filters, limit=query.limit)
    return [uid for uid in (_value(s, _STUDY_UID) for s in studies) if uid]


def analyse_studies(work: NodeWork, url: str, study_uids: list[str], *, skip_done: bool = True,
                    progress: bool = True) -> Iterator[tuple[str, AnalysisRecord | None, str | None]]:
    """Pull, analyse and STOW back each study: yields (uid, record or None, note)."""
    from tqdm import tqdm

    from fracturescan.pacs.studykey import study_key

    web = client(url)
    for uid in tqdm(study_uids, desc="studies", unit="study", disable=not progress or len(study_uids) < 2):
        if skip_done and already_analysed(web, uid):
            yield uid, None, "already analysed (a fracturescan result series exists); --force redoes it"
            continue
        objects = pull_study(web, uid)
        if not objects:
            yield uid, None, "holds only fracturescan results"
            continue
        yield uid, work.analyse(study_key(work.config.key, uid), objects), None
