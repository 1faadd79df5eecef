"""The session's trained phantom models, made in one background process while other tests run.

Training DenseNet121 from scratch twice (true and shuffled labels) is most of the suite's CPU
time, while most other tests keep only one of CI's two cores busy (servers, browsers, subprocess
start-up, waits). ``tests/conftest.py`` therefore starts ``python -m tests.phantom_models DIR
NAME...`` as soon as collection shows which of these the selected tests need, moves the modules
that use them to the end of the run, and has each fixture wait for its own piece. The pieces are
made in the order given, each by the same library calls a user's ``fracturescan synth`` /
``fracturescan train`` makes, with one torch thread; ``DIR/NAME.done`` marks a finished piece,
``DIR/NAME.failed`` holds the traceback of one that failed, and ``DIR/log.txt`` the output.

Run it by hand to see a piece being made: ``python -m tests.phantom_models /tmp/pm phantom_mura``.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: The phantom recipe shipped in configs/phantom.yaml (the one `make demo` uses).
PHANTOM_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "phantom.yaml"


def mura_root(root: Path) -> Path:
    """The phantom MURA v1.1 tree (320 wrist studies, 128 px) the trained runs share."""
    return root / "phantoms" / "MURA-v1.1"


def shuffled_csv(root: Path) -> Path:
    return root / "shuffled" / "shuffled.csv"


def run_dir(root: Path, name: str) -> Path:
    """The run directory of a trained piece (``routed_models`` is a folder of two runs)."""
    return root / name / ("models" if name == "routed_models" else "run")


def routed_data(root: Path) -> Path:
    return root / "routed_models" / "data"


def shuffled_label_csv(mura: Path, out_csv: Path, seed: int = 0) -> Path:
    """A CSV data set over the phantom images whose TRAIN study labels are randomly permuted
    (valid keeps its true labels), for checking that the model learns the fracture, not noise."""
    from fracturescan.data.mura import load_mura

    rng = np.random.default_rng(seed)
    train = load_mura(mura, "train")
    studies = sorted({r.study_id for r in train})
    true = {r.study_id: r.label for r in train}
    permuted = dict(zip(studies, rng.permutation([true[s] for s in studies]), strict=True))
    lines = ["path,label,study_id,patient_id,split"]
    lines += [f"{r.path},{permuted[r.study_id]},{r.study_id},{r.patient_id},train" for r in train]
    lines += [f"{r.path},{r.label},{r.study_id},{r.patient_id},valid" for r in load_mura(mura, "valid")]
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    out_csv.write_text("\n".join(lines) + "\n")
    (out_csv.parent / "SYNTHETIC.txt").write_text("Synthetic phantoms with shuffled training labels.\n")
    return out_csv


def _train(data: Path, out: Path, cache: Path, **overrides: object) -> None:
    from fracturescan.config import load_config
    from fracturescan.training.loop import train

    train(load_config(PHANTOM_CONFIG, {"data": str(data), "out": str(out), "cache_dir": str(cache), "seed": 0,
                                       **overrides}))


def make_phantom_mura(root: Path) -> None:
    from fracturescan.data.synth import generate_mura_phantoms

    generate_mura_phantoms(mura_root(root), studies=320, size=128, seed=11)


def make_phantom_run(root: Path) -> None:
    """DenseNet121 trained on the phantoms with their true labels (configs/phantom.yaml)."""
    _train(mura_root(root), run_dir(root, "phantom_run"), root / "phantom_run" / "cache")


def make_shuffled_run(root: Path) -> None:
    """The same training on the same images with shuffled training labels."""
    data = shuffled_label_csv(mura_root(root), shuffled_csv(root))
    _train(data, run_dir(root, "shuffled_run"), root / "shuffled_run" / "cache")


def make_phantom_resnet_run(root: Path) -> None:
    """A second, different model of the same phantoms: ResNet18, 3 epochs, seed 1, 64 px (its
    hold-out study AUC was 1.0 when written). For ensembles and comparisons."""
    _train(mura_root(root), run_dir(root, "phantom_resnet_run"), root / "phantom_resnet_run" / "cache",
           arch="resnet18", epochs=3, seed=1)


def make_routed_models(root: Path) -> None:
    """Body-part routing needs models that record different parts: resnet18 at 32 px, one epoch
    each (the numbers do not matter, which model answers does): ``both`` (wrist and finger) and
    ``finger`` (fingers only), in one models folder."""
    from fracturescan.data.synth import generate_mura_phantoms

    data = generate_mura_phantoms(routed_data(root), 48, 48, seed=7, body_part="XR_WRIST,XR_FINGER").root
    for name, part in (("both", "all"), ("finger", "XR_FINGER")):
        _train(data, run_dir(root, "routed_models") / name, root / "routed_models" / "cache", body_part=part,
               arch="resnet18", image_size=32, epochs=1, batch_size=16)


#: Each piece, what it needs first, and how it is made. A piece is named as the session fixture
#: in tests/conftest.py that waits for it: collection finds the pieces a test needs by those names.
PIECES: dict[str, tuple[tuple[str, ...], Callable[[Path], None]]] = {
    "phantom_mura": ((), make_phantom_mura),
    "phantom_run": (("phantom_mura",), make_phantom_run),
    "shuffled_run": (("phantom_mura",), make_shuffled_run),
    "phantom_resnet_run": (("phantom_mura",), make_phantom_resnet_run),
    "routed_models": ((), make_routed_models),
}


def with_requirements(names: list[str]) -> list[str]:
    """``names`` in order, each preceded by the pieces it needs."""
    ordered: list[str] = []
    for name in names:
        for piece in (*PIECES[name][0], name):
            if piece not in ordered:
                ordered.append(piece)
    return ordered


def main(argv: list[str]) -> int:
    root, names = Path(argv[0]), with_requirements(argv[1:])
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (root / f"{name}.done").exists():  # made by an earlier job of this session
            continue
        try:
            PIECES[name][1](root)
        except BaseException:
            (root / f"{name}.failed").write_text(traceback.format_exc())
            return 1
        (root / f"{name}.done").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
