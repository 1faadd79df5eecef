"""The GPU machines' image has torch, torchvision, timm, tensorboard, scikit-learn, matplotlib,
tqdm, typer, pillow and onnxruntime, but not streamlit, pydicom, fastapi, SQLAlchemy or argon2:
training and the training benchmark must import none of those."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABSENT_ON_GPU_IMAGE = ("streamlit", "pydicom", "fastapi", "sqlalchemy", "argon2", "captum")


def test_training_path_imports_nothing_the_gpu_image_lacks() -> None:
    code = (
        "import importlib.util, sys\n"
        "import fracturescan.train, fracturescan.training.loop, fracturescan.cli.main\n"
        f"spec = importlib.util.spec_from_file_location('tt', {str(ROOT / 'benchmarks' / 'train_throughput.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({ABSENT_ON_GPU_IMAGE!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
