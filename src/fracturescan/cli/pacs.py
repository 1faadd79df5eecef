"""Hospital integration commands: ``fracturescan dicom-node`` (a DICOM Storage SCP that
analyses studies and sends results back to PACS) and ``fracturescan pacs ...`` (DICOMweb pull
and push, and finding a study's audit records)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Optional

import typer

from ..errors import FracturescanError, MissingExtraError
from .core import app, command
from .server import _DB, _MODEL, _MODELS  # the same options as the app and the API

pacs_app = typer.Typer(help="PACS integration: DICOMweb pull/push and audit look-ups.", no_args_is_help=True)
app.add_typer(pacs_app, name="pacs")

_KEY = typer.Option(None, "--key-file", help="Secret key of the study hash in the audit trail "
                                             "(default STORAGE/study.key, created on first start; "
                                             "or $FRACTURESCAN_STUDY_KEY).")


def _require_pacs_extra() -> None:
    try:
        import highdicom  # noqa: F401
        import pynetdicom  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(exc.name or "highdicom", "pacs", "The DICOM node") from exc


@command("dicom-node")
def dicom_node(
    models: Optional[Path] = _MODELS, model: Optional[list[Path]] = _MODEL, db: str = _DB,
    aet: str = typer.Option("FRACTURESCAN", "--aet", help="This node's AE title."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for the network)."),
    port: int = typer.Option(11112, "--port", help="DICOM port to listen on."),
    storage: Path = typer.Option(Path("dicom-node"), "--storage", help="Folder for received objects and results."),
    quiet: float = typer.Option(10.0, "--quiet-seconds", min=0.0,
                                help="Analyse a study once no image of it arrived for this long."),
    forget: float = typer.Option(24.0, "--forget-hours", min=0.0,
                                 help="Drop idle studies from memory after this long (files stay on disk)."),
    send_to: Optional[str] = typer.Option(None, "--send-to", help="PACS to C-STORE results to: AET@host:port."),
    stow: Optional[str] = typer.Option(None, "--stow-url", help="DICOMweb URL to STOW-RS results to instead."),
    key_file: Optional[Path] = _KEY,
) -> None:
    """DICOM Storage SCP: receive CR/DX studies, analyse each once it is complete, send a
    structured report and heatmap secondary captures back into the study."""
    _require_pacs_extra()
    from ..pacs.node import DicomNode, NodeConfig
    from ..pacs.send import AEAddress
    from ..pacs.studykey import load_or_create_key

    if models is None and not model:
        raise FracturescanError("Give --models DIR (a folder of training runs) or --model PATH.")
    if send_to and stow:
        raise FracturescanError("Give --send-to or --stow-url, not both.")
    if not 0 < len(aet.strip()) <= 16:
        raise FracturescanError("--aet needs 1 to 16 characters.")
    config = NodeConfig(storage=storage, db_url=db, key=load_or_create_key(key_file or storage / "study.key"),
                        models_dir=models, model_paths=tuple(model or ()), aet=aet.strip(), host=host, port=port,
                        quiet_seconds=quiet, forget_seconds=forget * 3600.0, send_to=AEAddress.parse(send_to) if send_to else None, stow_url=stow)
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # one line per association otherwise
    node = DicomNode(config)
    node.start()
    target = send_to or stow or "nowhere (results kept in the storage folder)"
    typer.echo(f"DICOM node {aet}@{host}:{node.port} ready; results go to {target}. Ctrl+C stops it.")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()


@command("study-key", group=pacs_app)
def study_key_command(
    study: str = typer.Option(..., "--study", help="StudyInstanceUID to look up."),
    db: str = _DB,
    key_file: Path = typer.Option(Path("dicom-node/study.key"), "--key-file", help="The node's study key."),
) -> None:
    """The keyed hash of a StudyInstanceUID and the node's audit events that carry it."""
    from ..pacs.studykey import study_key
    from ..store.audit import recent_events
    from ..store.users import open_store

    if not key_file.is_file():
        raise FracturescanError(f"No study key at {key_file}: give the node's --key-file.")
    from ..pacs.studykey import load_or_create_key

    key = study_key(load_or_create_key(key_file), study)
    typer.echo(key)
    for event in recent_events(open_store(db), limit=100000):
        if event["detail"].startswith(key + ":"):
            typer.echo(f"{event['created_at_utc']}\t{event['action']}\t{event['detail']}")


@command("analyse", group=pacs_app)
def pacs_analyse(
    url: str = typer.Option(..., "--url", help="DICOMweb root of the PACS, e.g. http://pacs:8042/dicom-web."),
    study: Optional[list[str]] = typer.Option(None, "--study", help="StudyInstanceUID (repeatable)."),
    since: Optional[str] = typer.Option(None, "--since", help="Worklist: studies from this date (YYYYMMDD)."),
    until: Optional[str] = typer.Option(None, "--until", help="Worklist: studies up to this date (YYYYMMDD)."),
    modality: str = typer.Option("CR", "--modality", help="Worklist: modality in the study (CR or DX)."),
    force: bool = typer.Option(False, "--force", help="Analyse studies that already hold a result series."),
    models: Optional[Path] = _MODELS, model: Optional[list[Path]] = _MODEL, db: str = _DB,
    storage: Path = typer.Option(Path("dicom-node"), "--storage", help="Folder where result files are kept too."),
    key_file: Optional[Path] = _KEY,
) -> None:
    """Pull studies over DICOMweb (QIDO-RS + WADO-RS), analyse them, and store the SR and
    heatmap secondary captures back into each study (STOW-RS)."""
    _require_pacs_extra()
    import re

    from ..pacs.dicomweb import WorklistQuery, analyse_studies, client, find_studies
    from ..pacs.node import NodeConfig
    from ..pacs.node_work import NodeWork
    from ..pacs.studykey import load_or_create_key

    if models is None and not model:
        raise FracturescanError("Give --models DIR (a folder of training runs) or --model PATH.")
    for name, value in (("--since", since), ("--until", until)):
        if value is not None and not re.fullmatch(r"\d{8}", value):
            raise FracturescanError(f"{name} {value!r} is not a date as YYYYMMDD.")
    if not study and not (since or until):
        raise FracturescanError("Give --study UID, or a worklist with --since/--until YYYYMMDD.")
    config = NodeConfig(storage=storage, db_url=db, key=load_or_create_key(key_file or storage / "study.key"),
                        models_dir=models, model_paths=tuple(model or ()), stow_url=url)
    work = NodeWork(config)
    work.load()
    uids = list(study or []) or find_studies(client(url), WorklistQuery(since, until, modality.upper()))
    if not uids:
        typer.echo("No study matches.")
        return
    failures = 0
    for uid, record, note in analyse_studies(work, url, uids, skip_done=not force):
        if record is None:
            typer.echo(f"{uid}: skipped, {note}")
        elif not record.objects:
            typer.echo(f"{uid}: no result: it holds no image to analyse or refuse")
        elif record.error or not record.sent:
            failures += 1
            typer.echo(f"{uid}: results NOT stored: {record.error or 'nothing to send'}", err=True)
        else:
            typer.echo(f"{uid}: {record.n_analysed} image(s) analysed, {record.n_refused} refused, "
                       f"audit #{record.audit_id}; {len(record.objects)} result object(s) stored")
    if failures:
        raise FracturescanError(f"{failures} of {len(uids)} studies could not be completed (see above).")
