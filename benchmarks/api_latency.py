"""REST API latency: one image through HTTP against the same work done by a direct library call.

A real uvicorn server runs ``fracturescan.api`` in a thread of this process; an httpx client
posts one phantom PNG to ``/v1/predict`` (with and without ``?heatmaps=true``) with an API key.
The baselines, timed in blocks alternating with the HTTP calls so background load hits both
alike, are the
library calls the endpoint ends up making: ``Predictor.predict_image`` for a prediction and
``explain_image`` for a prediction with heatmap. The difference is what the API adds: HTTP,
multipart parsing, key check, threshold lookup, the audit write, the overlay PNG and JSON.

The model is a random-init DenseNet121 (weights do not change the cost); the database is a
fresh SQLite file.

    python benchmarks/api_latency.py                 # DenseNet121, 224 px, 50 runs
    python benchmarks/api_latency.py --runs 20 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tempfile
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import torch
import uvicorn

from fracturescan.api.app import create_app
from fracturescan.data.images import read_image
from fracturescan.data.synth import generate_mura_phantoms
from fracturescan.explain import explain_image
from fracturescan.models import build_model, save_checkpoint
from fracturescan.service import on_model_thread  # the baseline runs where the endpoint's work runs
from fracturescan.store.apikeys import create_key
from fracturescan.store.users import create_user, open_store
from fracturescan.appconfig import AppConfig
from inference_latency import alternating_blocks, machine, pct, print_table  # the sibling benchmark's helpers


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="densenet121")
    p.add_argument("--image-size", type=int, default=224, help="model input side")
    p.add_argument("--source-size", type=int, default=512, help="height of the phantom PNG")
    p.add_argument("--runs", type=int, default=50, help="timed calls per path")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before each block of timed ones")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch intra-op threads")
    return p.parse_args()


def build_checkpoint(directory: Path, arch: str, image_size: int) -> None:
    """A random-init checkpoint (run in a child process)."""
    torch.manual_seed(0)
    save_checkpoint(directory, build_model(arch, weights="none"), {"input_size": image_size})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(config: AppConfig) -> tuple[uvicorn.Server, str]:
    """A uvicorn server for ``config`` in a daemon thread; returns it and its base URL once up."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the API server did not start within 60 s")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    """Run the benchmark and print the table."""
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="fs-api-") as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        # Built in a child process: torch slows down once two threads of one process have run it
        # (see api/app.py), so in this process only the server's model thread runs torch.
        ckpt = root / "run" / "best"
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            child.submit(build_checkpoint, ckpt, args.arch, args.image_size).result()
        generate_mura_phantoms(root / "phantoms", 2, args.source_size, seed=0)
        png = sorted((root / "phantoms").rglob("*.png"))[0]
        data = png.read_bytes()
        config = AppConfig(db_url=f"sqlite:///{root / 'api.db'}", model_paths=(ckpt,))
        os.environ.setdefault("FRACTURESCAN_ADMIN_PASSWORD", "benchmark-admin-password")  # no one-time password
        engine = open_store(config.db_url)
        create_user(engine, "bench", "benchmark-password", "doctor", actor="benchmark")
        key = create_key(engine, "bench", "benchmark", actor="benchmark")[1]
        server, base = start_server(config)
        models = server.config.app.state.models
        predictor = models.predictor(models.active(engine))  # the very object the endpoint uses
        assert predictor.backend == "torch"

        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)

        def post(heatmaps: bool) -> None:
            response = client.post(f"/v1/predict?heatmaps={str(heatmaps).lower()}",
                                   files=[("files", (png.name, data, "image/png"))])
            response.raise_for_status()

        times = alternating_blocks({
            "library": lambda: on_model_thread(lambda: predictor.predict_image(data, name=png.name)),
            "api": lambda: post(False),
            "library+heatmap": lambda: on_model_thread(lambda: explain_image(predictor, read_image(data, name=png.name))),
            "api+heatmap": lambda: post(True),
        }, args.runs, args.warmup)
        server.should_exit = True
        report(args, times, load_at_start)


def report(args: argparse.Namespace, times: dict[str, list[float]], load_at_start: str) -> None:
    """Print the machine and the table: each API path against its library baseline."""
    print(f"{'load average at start':>26}: {load_at_start}")
    for key, value in machine().items():
        print(f"{key:>26}: {value}")
    print(f"{'model':>26}: {args.arch} (random init) at {args.image_size} px, torch eager, "
          f"{args.threads} threads, PNG {args.source_size} px phantom, {args.runs} runs")
    rows = [("path", "p50 ms", "p95 ms", "p50 vs baseline", "added p50 ms")]
    for name, base, label in (("library", "library", "Predictor.predict_image (baseline)"),
                              ("api", "library", "POST /v1/predict"),
                              ("library+heatmap", "library+heatmap", "explain_image (baseline)"),
                              ("api+heatmap", "library+heatmap", "POST /v1/predict?heatmaps=true")):
        p50, b50 = pct(times[name], 50), pct(times[base], 50)
        rows.append((label, f"{p50:.1f}", f"{pct(times[name], 95):.1f}", f"{p50 / b50:.2f}x", f"{p50 - b50:+.1f}"))
    print_table(rows)


if __name__ == "__main__":
    main()
