"""The benchmarks run end to end at a tiny size (CI proves they work; numbers are not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_train_throughput_smoke() -> None:
    out = _run("train_throughput.py", "--device", "cpu", "--arch", "resnet18", "--image-size", "32",
               "--images", "32", "--steps", "2", "--warmup", "1", "--batch-size", "8", "--workers", "1",
               "--threads", "1")
    assert "naive" in out and "fast" in out


def test_inference_latency_smoke() -> None:
    pytest.importorskip("onnxruntime")
    out = _run("inference_latency.py", "--arch", "resnet18", "--image-size", "32", "--source-size", "64",
               "--runs", "3", "--warmup", "1", "--batch", "4", "--batch-runs", "1", "--threads", "1")
    assert "torch" in out.lower() and "onnx" in out.lower()
    assert "TTA (4 views)" in out and "ensemble of 2 + TTA" in out and "one ONNX graph" in out


def test_cuda_graph_parity_check_refuses_a_cpu_clearly() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run benchmarks/cuda_graph_parity.py itself")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cuda_graph_parity.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "needs a CUDA device" in done.stderr


def test_api_latency_smoke() -> None:
    for module in ("fastapi", "uvicorn", "httpx", "multipart", "sqlalchemy"):
        pytest.importorskip(module)
    out = _run("api_latency.py", "--arch", "resnet18", "--image-size", "32", "--source-size", "64",
               "--runs", "2", "--warmup", "1", "--threads", "1")
    assert "POST /v1/predict" in out and "Predictor.predict_image (baseline)" in out
