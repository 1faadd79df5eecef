"""DICOM node overhead: a 3-view study sent by C-STORE to ``fracturescan dicom-node``, timed from
the last C-STORE response to the SR being stored in Orthanc, against the library's own analysis
of the same three files (``service.analyse_uploads`` with heatmaps, on the node's own model and
model thread) in the same run. The node's quiet period is subtracted; what remains is what the
node adds: reading its files, the policy checks, the audit write, building the SR and the
Secondary Captures, and the C-STORE to Orthanc (which stores them).

Orthanc 1.10 cannot bind to one address, so the whole benchmark re-runs itself inside a
loopback-only network namespace (``unshare --net``), like the tests.

The views are real CRs relabelled as one wrist study: the committed hand (2500x2048, JPEG 2000)
and pydicom-data's tibia (1760x1760, JPEG 2000 and uncompressed). The model is a random-init
DenseNet121 at 224 px (weights do not change the cost).

    python benchmarks/dicom_node.py               # 5 runs each
    python benchmarks/dicom_node.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSIDE = "FRACTURESCAN_BENCH_IN_NETNS"


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="timed studies per path")
    p.add_argument("--quiet", type=float, default=0.5, help="the node's quiet period (seconds, subtracted)")
    p.add_argument("--arch", default="densenet121")
    p.add_argument("--image-size", type=int, default=224)
    return p.parse_args()


def build_checkpoint(directory: Path, arch: str, image_size: int) -> None:
    """A random-init checkpoint (in a child process: this one runs torch on one thread only)."""
    import torch

    from fracturescan.models import build_model, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(directory, build_model(arch, weights="none"), {"input_size": image_size})


def sr_stored(base: str, study_uid: str) -> bool:
    """True once Orthanc holds an SR in the study (its REST find, answered from its index)."""
    query = json.dumps({"Level": "Instance", "Query": {"StudyInstanceUID": study_uid, "Modality": "SR"}}).encode()
    request = urllib.request.Request(f"{base}/tools/find", data=query, method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return bool(json.load(reply))


def run(args: argparse.Namespace) -> None:
    """The benchmark proper (inside the namespace)."""
    import numpy as np
    import pydicom

    from fracturescan.pacs.node import DicomNode, NodeConfig
    from fracturescan.pacs.send import AEAddress
    from fracturescan.service import analyse_uploads, on_model_thread
    from inference_latency import machine, print_table
    from tests.pacs.conftest import relabel_as_wrist
    from tests.pacs.netkit import send
    from tests.pacs.orthanc import free_port, orthanc
    from tests.real_samples import hand, pydicom_data_file

    logging.basicConfig(level=logging.WARNING)
    load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    views = [hand(), pydicom_data_file("RG3_J2KR.dcm"), pydicom_data_file("RG3_UNCR.dcm")]
    with tempfile.TemporaryDirectory(prefix="fs-node-") as tmp:
        root = Path(tmp)
        ckpt = root / "run" / "best"
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            child.submit(build_checkpoint, ckpt, args.arch, args.image_size).result()
        os.environ.setdefault("FRACTURESCAN_ADMIN_PASSWORD", "benchmark-admin-password")
        node_port = free_port()
        with orthanc(root / "orthanc", {"fracturescan": ("FRACTURESCAN", "127.0.0.1", node_port)}) as pacs:
            node = DicomNode(NodeConfig(storage=root / "node", db_url=f"sqlite:///{root / 'audit.db'}",
                                        key=b"b" * 32, model_paths=(ckpt,), port=node_port, quiet_seconds=args.quiet,
                                        send_to=AEAddress(str(pacs["aet"]), "127.0.0.1", int(pacs["dicom_port"]))))
            node.start()
            first = [relabel_as_wrist(v, root / "views" / f"v{n}.dcm", instance=n) for n, v in enumerate(views, 1)]
            uploads = [(p.name, p.read_bytes()) for p in first]
            _, predictor, threshold = node.work.current(uploads)
            library, overhead, total = [], [], []
            for i in range(args.runs + 1):  # the first round warms both paths up, untimed
                t0 = time.perf_counter()
                on_model_thread(analyse_uploads, predictor, uploads, threshold, heatmaps=True)
                library_s = time.perf_counter() - t0
                study = f"1.2.826.0.1.3680043.8.498.77{i:03d}"
                datasets = [pydicom.dcmread(relabel_as_wrist(v, root / f"s{i}" / f"v{n}.dcm", study_uid=study,
                                                            instance=n)) for n, v in enumerate(views, 1)]
                assert send(node_port, datasets, contexts=("1.2.840.10008.5.1.4.1.1.1",)) == [0, 0, 0]
                t_last = time.perf_counter()
                while not sr_stored(str(pacs["http"]), study):
                    time.sleep(0.01)
                node_s = time.perf_counter() - t_last
                if i:
                    library.append(library_s)
                    total.append(node_s)
                    overhead.append(node_s - args.quiet)
            node.stop()
    assert all(r.sent for r in node.records), [r.error for r in node.records]
    med = lambda values: float(np.median(values))  # noqa: E731
    print(f"{'load average at start':>26}: {load_at_start}")
    for key, value in machine().items():
        print(f"{key:>26}: {value}")
    print(f"{'model':>26}: {args.arch} (random init) at {args.image_size} px, torch eager, heatmaps on; "
          f"3 real CR views (2500x2048 J2K, 1760x1760 J2K, 1760x1760 raw); {args.runs} studies; "
          f"quiet period {args.quiet} s")
    rows = [("path", "median s", "min s", "max s", "vs library")]
    rows.append(("library: analyse_uploads of the 3 files (baseline)", f"{med(library):.2f}",
                 f"{min(library):.2f}", f"{max(library):.2f}", "1.00x"))
    rows.append(("node: last C-STORE response -> SR in Orthanc", f"{med(total):.2f}", f"{min(total):.2f}",
                 f"{max(total):.2f}", f"{med(total) / med(library):.2f}x"))
    rows.append((f"  the same minus the {args.quiet} s quiet period", f"{med(overhead):.2f}",
                 f"{min(overhead):.2f}", f"{max(overhead):.2f}", f"{med(overhead) / med(library):.2f}x"))
    print_table(rows)


def main() -> None:
    """Re-run inside a loopback-only network namespace, or run the benchmark there."""
    args = parse_args()
    if os.environ.get(INSIDE):
        run(args)
        return
    if shutil.which("unshare") is None:
        raise SystemExit("unshare is needed to keep Orthanc on a loopback-only network namespace")
    command = f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} " + " ".join(sys.argv[1:])
    paths = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, INSIDE: "1", "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    raise SystemExit(subprocess.call(["unshare", "--net", "--map-root-user", "sh", "-c", command], env=env, cwd=ROOT))


if __name__ == "__main__":
    main()
