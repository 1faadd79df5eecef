"""End to end with a real PACS: Orthanc receives the SR and the heatmap SCs in the right study,
from ``fracturescan pacs analyse`` (DICOMweb pull + STOW) and from the DICOM node (C-STORE),
and they validate with dciodvfy and read back to the audited values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("dicomweb_client")

from tests.pacs import orthanc  # noqa: E402
from tests.pacs.conftest import dciodvfy_errors, walk_content  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scenario(pacs_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    reason = orthanc.missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("orthanc_scenario")
    command = (f"ip link set lo up && exec {sys.executable} -m tests.pacs.orthanc_scenario "
               f"{pacs_checkpoint} {out}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    run = subprocess.run(["unshare", "--net", "--map-root-user", "sh", "-c", command], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads((out / "summary.json").read_text()), out


def _check_results(instances: list[dict], study: str, n_views: int) -> list[dict]:
    results = [i for i in instances if i["manufacturer"].startswith("fracturescan")]
    assert sorted(i["modality"] for i in results) == ["OT"] * n_views + ["SR"]
    assert {i["study"] for i in instances} == {study}  # in the source study
    sources = {i["series"] for i in instances if i not in results}
    assert not sources & {i["series"] for i in results}  # in new series
    for item in results:
        assert dciodvfy_errors(Path(item["file"])) == [], item["file"]
    return results


def test_pacs_analyse_stores_results_in_orthanc(scenario) -> None:
    import pydicom

    from fracturescan.store.audit import audit_rows
    from fracturescan.store.db import make_engine

    summary, out = scenario
    assert summary["pacs_analyse_exit"] == 0
    results = _check_results(summary["a"], "1.2.826.0.1.3680043.8.498.4001", 2)
    sr = pydicom.dcmread(next(i["file"] for i in results if i["modality"] == "SR"))
    values = [float(i.MeasuredValueSequence[0].NumericValue) for i in walk_content(sr.ContentSequence)
              if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "PABN"]
    rows = [r for r in audit_rows(make_engine(f"sqlite:///{out / 'audit.db'}")) if r["study_id"] == 1]
    assert values[0] == pytest.approx(rows[0]["study_probability"], abs=1e-6)  # what PACS shows = audited
    assert sorted(values[1:]) == pytest.approx(sorted(r["image_probability"] for r in rows), abs=1e-6)


def test_orthanc_forwards_to_the_node_and_gets_its_results(scenario) -> None:
    """The repository's Orthanc example (config + Lua rule) forwards the uploaded CR images to
    the node, which analyses the study once and stores its results back in it."""
    summary, _ = scenario
    assert len(summary["node_record"]) == 1
    assert summary["node_record"][0]["sent"] and summary["node_record"][0]["n_analysed"] == 2
    _check_results(summary["b"], "1.2.826.0.1.3680043.8.498.4002", 2)


def test_worklist_finds_cr_studies_and_skips_analysed_ones(scenario) -> None:
    """--since finds both CR studies, and skips them: each already holds a result series."""
    summary, _ = scenario
    assert summary["worklist_exit"] == 0
    lines = sorted(summary["worklist_output"].strip().splitlines())
    assert [line.split(":")[0] for line in lines] == ["1.2.826.0.1.3680043.8.498.4001",
                                                      "1.2.826.0.1.3680043.8.498.4002"]
    assert all("skipped, already analysed" in line for line in lines)
