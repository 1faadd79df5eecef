"""The DICOM node over real DICOM networking (pynetdicom on 127.0.0.1): studies analysed once
after a quiet period, a late image superseding the first analysis, results sent back to a
Storage SCP standing in for PACS, audit rows without identifiers, and hostile input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("sqlalchemy")

from tests.pacs.conftest import sr_texts  # noqa: E402
from tests.pacs.netkit import CR, CT, REAL_CHEST, Receiver, echo, send, small_cr  # noqa: E402
from tests.real_samples import pydicom_data_file  # noqa: E402


@pytest.fixture
def receiver():
    pacs = Receiver()
    yield pacs
    pacs.close()


@pytest.fixture
def make_node(tmp_path: Path, pacs_checkpoint: Path, receiver: Receiver):
    from fracturescan.pacs.node import DicomNode, NodeConfig
    from fracturescan.pacs.send import AEAddress

    nodes = []

    def make(quiet: float = 0.6, forget: float = 3600.0) -> DicomNode:
        config = NodeConfig(storage=tmp_path / "node", db_url=f"sqlite:///{tmp_path / 'audit.db'}",
                            key=b"k" * 32, model_paths=(pacs_checkpoint,), port=0, quiet_seconds=quiet,
                            forget_seconds=forget, send_to=AEAddress.parse(receiver.address))
        node = DicomNode(config)
        node.start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


def _by_modality(datasets, modality):
    return [ds for ds in datasets if ds.Modality == modality]


def test_study_is_analysed_once_and_a_late_image_supersedes(make_node, receiver: Receiver, tmp_path: Path) -> None:
    from fracturescan.pacs.studykey import study_key
    from fracturescan.store.audit import audit_rows, recent_events
    from tests.pacs.conftest import dciodvfy_errors

    node = make_node(quiet=1.0)
    study = "1.2.826.0.1.3680043.8.498.2001"
    assert echo(node.port) == 0x0000
    assert send(node.port, [small_cr(study, 1)]) == [0]
    time.sleep(0.3)  # inside the quiet period: the study is not complete yet
    assert send(node.port, [small_cr(study, 2)]) == [0]
    first = node.wait_for(1)[0]
    assert (first.n_analysed, first.n_refused, first.sent, first.supersedes) == (2, 0, True, None)
    # Received objects were on disk before they were acknowledged (and stay there).
    assert len(list((tmp_path / "node" / "incoming").rglob("*.dcm"))) == 2
    sr1 = _by_modality(receiver.received, "SR")
    assert len(sr1) == 1 and len(_by_modality(receiver.received, "OT")) == 2
    assert {ds.StudyInstanceUID for ds in receiver.received} == {study}
    assert dciodvfy_errors(first.objects[0]) == []

    assert send(node.port, [small_cr(study, 3)]) == [0]  # a late view
    records = node.wait_for(2)
    assert len(records) == 2
    # A PACS sending the same objects again (e.g. a routing rule firing when our results arrive)
    # must not start a loop of analyses.
    assert send(node.port, [small_cr(study, 1), small_cr(study, 3)]) == [0, 0]
    assert node.pending() == 0  # acknowledged, but nothing new to analyse
    time.sleep(2.0)  # twice the quiet period: a third analysis would have started by now
    assert len(node.records) == 2
    second = records[1]
    assert second.n_analysed == 3 and second.supersedes == first.audit_id
    sr2 = [ds for ds in _by_modality(receiver.received, "SR") if ds.SOPInstanceUID != sr1[0].SOPInstanceUID]
    predecessor = sr2[0].PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == sr1[0].SOPInstanceUID

    engine = node.work.engine
    rows = audit_rows(engine)
    assert sorted({(r["study_id"], r["n_images"]) for r in rows}) == [(first.audit_id, 2), (second.audit_id, 3)]
    assert {r["username"] for r in rows} == {"dicom-node"}
    events = [e for e in recent_events(engine) if e["action"] == "dicom_analysis"]
    key = study_key(b"k" * 32, study)
    assert len(events) == 2 and all(e["detail"].startswith(key + ":") for e in events)
    assert f"supersedes audit #{first.audit_id}" in events[0]["detail"]  # newest first
    text = " ".join(e["detail"] for e in recent_events(engine))
    assert study not in text and "NODE" not in text  # no UID, no patient data


def test_hostile_and_odd_input_never_stops_the_node(make_node, receiver: Receiver, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pynetdicom import _config

    node = make_node(quiet=0.5)
    base = "1.2.826.0.1.3680043.8.498.30"
    ct = small_cr(f"{base}1", 1, modality="CT", sop_class=CT)
    chest = pydicom.dcmread(pydicom_data_file(REAL_CHEST))  # a real chest CR, as it comes
    chest.StudyInstanceUID = f"{base}2"
    report = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    report.StudyInstanceUID = f"{base}3"
    multi = small_cr(f"{base}4", 1, frames=3)
    elbow = small_cr(f"{base}10", 1, body_part="ELBOW")  # the model covers wrists only
    assert send(node.port, [ct, chest, report, multi, elbow]) == [0] * 5

    # Two studies interleaved, then one association aborted after its first image.
    a, b = f"{base}5", f"{base}6"
    assert send(node.port, [small_cr(a, 1), small_cr(b, 1), small_cr(a, 2), small_cr(b, 2)]) == [0] * 4
    aborted = f"{base}7"
    assert send(node.port, [small_cr(aborted, 1), small_cr(aborted, 2)], abort_after=1) == [0]

    # Truncated and huge-declared-length files, sent as raw bytes (not re-encoded by the sender).
    whole = tmp_path / "whole.dcm"
    small_cr(f"{base}8", 1).save_as(whole, enforce_file_format=True)
    data = whole.read_bytes()
    truncated, cut_header, huge = tmp_path / "truncated.dcm", tmp_path / "cut.dcm", tmp_path / "huge.dcm"
    truncated.write_bytes(data[: len(data) * 2 // 3])  # cut inside the pixel data
    cut_header.write_bytes(data[:400])  # cut before the study's UIDs
    at = data.index(b"\x10\x00\x10\x00PN")  # PatientName declares a length beyond the end of the file
    huge.write_bytes(data[:at + 6] + b"\xf0\xff" + data[at + 8:])
    monkey = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        statuses = send(node.port, [truncated, cut_header, huge])
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = monkey
    # A parsable header is acknowledged (and refused at analysis); an unparsable one is refused now.
    assert statuses[0] == 0 and statuses[1] == statuses[2] == 0xC210

    # A transfer syntax nothing here decodes (MPEG-2 video in a CR): acknowledged, then refused.
    from pydicom.encaps import encapsulate

    mpeg2 = "1.2.840.10008.1.2.4.100"
    video = small_cr(f"{base}11", 1)
    video.file_meta.TransferSyntaxUID = mpeg2
    video.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    video["PixelData"].VR = "OB"
    video_file = tmp_path / "video.dcm"
    video.save_as(video_file, enforce_file_format=True)
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assert send(node.port, [video_file], contexts=(CR,), syntaxes=(mpeg2,)) == [0]
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = monkey

    many = f"{base}9"
    assert send(node.port, [small_cr(many, n, side=32) for n in range(1, 201)]) == [0] * 200

    records = node.wait_for(11, timeout=120)

    by_key = {r.study_key: r for r in records}
    from fracturescan.pacs.studykey import study_key

    def record(uid: str):
        return by_key[study_key(b"k" * 32, uid)]

    assert record(f"{base}1").n_refused == 1 and record(f"{base}1").n_analysed == 0  # CT: refusal SR
    assert record(f"{base}2").n_refused == 1  # chest
    assert record(f"{base}3").objects == []  # a report: no result (would loop between AI nodes)
    assert record(f"{base}4").n_analysed == 1  # multi-frame: the first frame
    assert record(a).n_analysed == 2 and record(b).n_analysed == 2
    assert record(aborted).n_analysed == 1  # the image acknowledged before the abort
    assert record(many).n_analysed == 0 and record(many).n_refused == 200
    assert record(f"{base}8").n_refused == 1  # the truncated pixel data
    srs = {ds.StudyInstanceUID: ds for ds in receiver.received if ds.Modality == "SR"}
    texts = lambda uid: sr_texts(srs[uid])  # noqa: E731
    assert "SOP class CT Image Storage is not a CR or DX radiograph" in texts(f"{base}1")
    assert "chest radiographs are outside" in texts(f"{base}2")
    assert "200 images" in texts(many)
    assert "truncated" in texts(f"{base}8")
    assert record(f"{base}10").n_refused == 1 and "No model covers XR_ELBOW" in texts(f"{base}10")
    assert record(f"{base}11").n_refused == 1 and "MPEG2" in texts(f"{base}11").replace("-", "")
    assert all(r.error is None for r in records)
    assert echo(node.port) == 0x0000  # still serving
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "NODE^TEST" not in logged and "NODE-TEST-1" not in logged


def test_a_forgotten_study_is_reanalysed_with_every_stored_image(make_node, receiver: Receiver) -> None:
    """Idle studies leave memory (a node runs for months); an image arriving later re-analyses the
    study with all its images on disk, as after a restart."""
    node = make_node(quiet=0.3, forget=0.3)
    study = "1.2.826.0.1.3680043.8.498.2002"
    assert send(node.port, [small_cr(study, 1), small_cr(study, 2)]) == [0, 0]
    assert node.wait_for(1)[0].n_analysed == 2
    deadline = time.monotonic() + 10
    while node.known_studies() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.known_studies() == 0  # forgotten
    assert send(node.port, [small_cr(study, 2)]) == [0]  # an unchanged copy: nothing new
    assert node.pending() == 0
    assert send(node.port, [small_cr(study, 3)]) == [0]
    assert node.wait_for(2)[1].n_analysed == 3  # images 1 and 2 from disk, 3 just received
