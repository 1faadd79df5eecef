"""REST API under load: 8-32 concurrent clients against ``fracturescan serve --workers N`` whose
worker processes share one PostgreSQL database, against a single client in the same run.

A throwaway PostgreSQL server (initdb in a temporary folder, Unix socket only) and a real
``fracturescan serve`` process are started; each client is a thread with its own HTTP
connection posting one phantom-like PNG per request to ``/v1/predict`` with an API key. Reported
per phase: throughput, p50/p95/p99 latency, and the answers by status. Checked after each phase:
every request got a documented status with a JSON body, and every successful prediction has
exactly one audit row (the audit ids returned are distinct and each is in the database once;
no other analysis appeared).

    python benchmarks/api_load.py                              # 2 workers; 1, 8 and 32 clients
    python benchmarks/api_load.py --workers 4 --clients 8 16 32 --requests 20
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the throwaway PostgreSQL server of the tests
from inference_latency import machine, pct, print_table  # noqa: E402  (the sibling benchmark's helpers)
from tests.servers import free_port, running  # noqa: E402
from tests.webapp.pg_server import postgres_server  # noqa: E402

#: The statuses the API documents (README, OpenAPI); anything else is a failure of the check.
DOCUMENTED = {200, 400, 401, 404, 413, 422, 500, 503}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2, help="API worker processes")
    p.add_argument("--clients", type=int, nargs="+", default=[8, 32], help="concurrent clients per phase")
    p.add_argument("--requests", type=int, default=12, help="requests per client per phase")
    p.add_argument("--single-requests", type=int, default=40, help="requests of the single-client baseline")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=64, help="model input side")
    return p.parse_args()


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (320, 256), dtype=np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def _client(base: str, key: str, n: int, seed: int, out: list[tuple[float, int, int | None, bool]]) -> None:
    """``n`` predictions on one connection; appends (seconds, status, audit id, JSON ok)."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=300) as http:
        for i in range(n):
            start = time.perf_counter()
            response = http.post("/v1/predict", files=[("files", (f"v{i}.png", _png(seed * 1000 + i), "image/png"))])
            elapsed = time.perf_counter() - start
            try:
                body = response.json()
                json_ok = isinstance(body, dict) and ("audit_id" in body if response.status_code == 200
                                                      else isinstance(body.get("error"), str))
            except ValueError:
                body, json_ok = {}, False
            out.append((elapsed, response.status_code, body.get("audit_id"), json_ok))


def run_phase(base: str, key: str, clients: int, per_client: int) -> tuple[float, list]:
    """``clients`` threads at once; returns (wall seconds, results)."""
    results: list = []
    threads = [threading.Thread(target=_client, args=(base, key, per_client, c, results)) for c in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, results


def audit_rows(db_url: str) -> Counter:
    """{audit id: occurrences} of every analysis in the database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        ids = Counter(row[0] for row in conn.execute(text("SELECT id FROM audit_studies")))
    engine.dispose()
    return ids


def check(results: list, before: Counter, after: Counter) -> str:
    """Raise if an answer was undocumented or the audit rows do not match the successes."""
    statuses = Counter(status for _, status, _, _ in results)
    if set(statuses) - DOCUMENTED or not all(ok for *_, ok in results):
        raise SystemExit(f"undocumented answers: {statuses}")
    returned = [audit_id for _, status, audit_id, _ in results if status == 200]
    new = after - before
    if len(set(returned)) != len(returned) or Counter(returned) != new:
        raise SystemExit(f"{len(returned)} successful predictions but {sum(new.values())} new audit rows")
    return ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))


def build(root: Path, db_url: str, arch: str, size: int) -> tuple[Path, str]:
    """A random-init checkpoint, a doctor and the doctor's API key in the database."""
    import torch

    from fracturescan.models import build_model, save_checkpoint
    from fracturescan.store.apikeys import create_key
    from fracturescan.store.users import create_user, open_store

    torch.manual_seed(0)
    checkpoint = save_checkpoint(root / "run" / "best", build_model(arch, weights="none"),
                                 {"input_size": size, "synthetic": True, "threshold": 0.5})
    engine = open_store(db_url)
    create_user(engine, "loadtest", "load-test-password-1", "doctor", actor="benchmark")
    key = create_key(engine, "loadtest", "load test", actor="benchmark")[1]
    engine.dispose()
    return checkpoint, key


def main() -> None:
    """Start PostgreSQL and the API, run the phases, print the table."""
    args = parse_args()
    os.environ.setdefault("FRACTURESCAN_ADMIN_PASSWORD", "load-test-admin-password")
    with tempfile.TemporaryDirectory() as tmp:
        pg = postgres_server()
        db_url = next(pg)
        try:
            root = Path(tmp)
            checkpoint, key = build(root, db_url, args.arch, args.image_size)
            port = free_port()
            command = [sys.executable, "-m", "fracturescan.cli.main", "serve", "--model", str(checkpoint),
                       "--db", db_url, "--port", str(port), "--workers", str(args.workers)]
            env = {"OMP_NUM_THREADS": "1", "FRACTURESCAN_ADMIN_PASSWORD": os.environ["FRACTURESCAN_ADMIN_PASSWORD"]}
            base = f"http://127.0.0.1:{port}"
            with running(command, root / "serve.log", env, ready_url=f"{base}/v1/health", timeout=180):
                run_phase(base, key, args.workers, 2)  # warm every worker's model
                rows, single = [], None
                for clients in [1, *args.clients]:
                    per_client = args.single_requests if clients == 1 else args.requests
                    before = audit_rows(db_url)
                    wall, results = run_phase(base, key, clients, per_client)
                    answers = check(results, before, audit_rows(db_url))
                    seconds = [r[0] for r in results]
                    throughput = len(results) / wall
                    single = single or throughput
                    rows.append((f"{clients} client(s) x {per_client}", f"{throughput:.1f}", f"{throughput / single:.2f}x",
                                 f"{pct(seconds, 50):.0f}", f"{pct(seconds, 95):.0f}", f"{pct(seconds, 99):.0f}", answers))
        finally:
            next(pg, None)  # stops and deletes the server
    print(f"Machine: {', '.join(f'{k} {v}' for k, v in machine().items())}")
    print(f"{args.workers} API workers sharing PostgreSQL; model {args.arch} at "
          f"{args.image_size} px, one 256x320 PNG per request; every success has exactly one audit row.")
    print_table([("phase", "req/s", "vs 1 client", "p50 ms", "p95 ms", "p99 ms", "answers"), *rows])


if __name__ == "__main__":
    main()
