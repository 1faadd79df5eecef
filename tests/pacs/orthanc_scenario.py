"""The hospital scenario against a real Orthanc, run by tests/pacs/test_orthanc.py inside a
loopback-only network namespace: ``python -m tests.pacs.orthanc_scenario CHECKPOINT OUT``.

1. Orthanc starts with the real CR samples of one wrist study (A) uploaded to it.
2. ``fracturescan pacs analyse --url …/dicom-web --study A`` pulls A (QIDO + WADO), analyses it
   and stores the SR and SCs back (STOW).
3. A DICOM node is started with ``--send-to ORTHANC@…``; study B is uploaded to Orthanc, whose
   configuration and Lua rule are the repository's example (examples/orthanc/): Orthanc forwards
   the CR images to the node by C-STORE, and the node sends its results back.
4. What Orthanc holds for A and B afterwards is fetched back over WADO-RS into OUT and
   summarised in OUT/summary.json for the test to check.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _instances(web, study_uid: str) -> list[dict[str, str]]:
    out = []
    for item in web.search_for_instances(study_instance_uid=study_uid):
        series, sop = item["0020000E"]["Value"][0], item["00080018"]["Value"][0]
        out.append({"series": series, "sop": sop})
    return out


def _fetch_results(web, study_uid: str, folder: Path) -> list[dict[str, str]]:
    """Every instance of the study as Orthanc serves it; our results saved to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    found = []
    for item in _instances(web, study_uid):
        ds = web.retrieve_instance(study_uid, item["series"], item["sop"])
        entry = {"modality": str(ds.Modality), "sop_class": str(ds.SOPClassUID), "study": str(ds.StudyInstanceUID),
                 "series": str(ds.SeriesInstanceUID), "sop": str(ds.SOPInstanceUID),
                 "manufacturer": str(ds.get("Manufacturer", ""))}
        if ds.Modality in ("SR", "OT"):
            path = folder / f"{ds.Modality}_{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            entry["file"] = str(path)
        found.append(entry)
    return found


def main(checkpoint: Path, out: Path) -> None:
    from fracturescan.cli.main import main as cli
    from fracturescan.pacs.dicomweb import client
    from fracturescan.pacs.node import DicomNode, NodeConfig
    from fracturescan.pacs.send import AEAddress
    from tests.pacs.orthanc import free_port, orthanc, upload
    from tests.pacs.conftest import relabel_as_wrist
    from tests.real_samples import pydicom_data_file

    study_a, study_b = "1.2.826.0.1.3680043.8.498.4001", "1.2.826.0.1.3680043.8.498.4002"
    views = [pydicom_data_file("RG3_J2KR.dcm"), pydicom_data_file("RG3_UNCR.dcm")]  # real CRs (tibia)
    node_port = free_port()
    summary: dict[str, object] = {}
    example = Path(__file__).resolve().parents[2] / "examples" / "orthanc"
    registered = json.loads((example / "orthanc.json").read_text())["DicomModalities"]["fracturescan"]
    with orthanc(out / "orthanc", {"fracturescan": (registered[0], "127.0.0.1", node_port)},
                 (example / "forward-to-fracturescan.lua",)) as pacs:
        for n, view in enumerate(views, 1):
            upload(str(pacs["http"]), relabel_as_wrist(view, out / "a" / f"view{n}.dcm", study_uid=study_a,
                                                      instance=n).read_bytes())
        db = f"sqlite:///{out / 'audit.db'}"
        code = cli(["pacs", "analyse", "--url", str(pacs["dicomweb"]), "--study", study_a, "--model", str(checkpoint),
                    "--db", db, "--storage", str(out / "pull"), "--key-file", str(out / "study.key")])
        summary["pacs_analyse_exit"] = code
        web = client(str(pacs["dicomweb"]))
        summary["a"] = _fetch_results(web, study_a, out / "orthanc_a")

        from fracturescan.pacs.studykey import load_or_create_key

        node = DicomNode(NodeConfig(storage=out / "node", db_url=db, key=load_or_create_key(out / "study.key"),
                                    model_paths=(checkpoint,), port=node_port, quiet_seconds=2.0,
                                    send_to=AEAddress(str(pacs["aet"]), "127.0.0.1", int(pacs["dicom_port"]))))
        node.start()
        try:
            for n, view in enumerate(views, 1):  # into the PACS; its routing rule does the rest
                upload(str(pacs["http"]), relabel_as_wrist(view, out / "b" / f"view{n}.dcm", study_uid=study_b,
                                                          instance=n).read_bytes())
            node.wait_for(1, timeout=120)
            time.sleep(3.0)  # longer than the quiet period: a second analysis would show now
            summary["node_record"] = [{"sent": r.sent, "error": r.error, "n_analysed": r.n_analysed,
                                       "audit_id": r.audit_id} for r in node.records]
            summary["b"] = _fetch_results(web, study_b, out / "orthanc_b")
        finally:
            node.stop()
        # The worklist form: every CR study since 1900 (both), each already analysed, so skipped.
        import contextlib
        import io

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            summary["worklist_exit"] = cli(["pacs", "analyse", "--url", str(pacs["dicomweb"]), "--since", "19000101",
                                            "--model", str(checkpoint), "--db", db, "--storage", str(out / "pull"),
                                            "--key-file", str(out / "study.key")])
        summary["worklist_output"] = printed.getvalue()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
