"""The ``fracturescan`` command line: a thin shell over the library.

Every user mistake surfaces as one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import FracturescanError
from . import output
from .core import app, command

#: Long-running commands report progress at INFO; the others stay quiet unless something is wrong,
#: so a user error prints exactly one line.
_CHATTY = frozenset({"train", "evaluate", "synth", "export", "app", "serve", "dicom-node"})


@app.callback()
def _root(ctx: typer.Context,
          verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    level = logging.DEBUG if verbose else (logging.INFO if ctx.invoked_subcommand in _CHATTY else logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    logging.captureWarnings(True)  # library warnings go through logging, at the same level
    if not verbose:
        # pydicom narrates every oddity of a malformed file (and resets its own logger's level on
        # import), and logs a full traceback at ERROR for each decoder plugin that fails, even
        # when the next plugin succeeds; our reader's error already says what matters, in one
        # line per file, and pydicom's text may quote file content. A handler filter and a
        # warnings filter keep it quiet; --verbose shows the details.
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda r: not r.name.startswith("pydicom"))


@command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to create (becomes the MURA-v1.1 style root)."),
    studies: int = typer.Option(300, help="Number of studies (train + valid)."),
    size: int = typer.Option(256, help="Image height in pixels."),
    seed: int = typer.Option(0, help="Random seed (same seed, same files)."),
    valid_fraction: float = typer.Option(0.2, help="Share of studies in the valid split."),
    body_part: str = typer.Option("XR_WRIST", "--body-part",
                                  help="XR_WRIST, XR_FINGER, or both comma-separated (studies shared out evenly)."),
) -> None:
    """Generate SYNTHETIC wrist (and finger) phantoms in the exact MURA v1.1 layout (for tests and demos)."""
    from ..data.synth import generate_mura_phantoms

    summary = generate_mura_phantoms(out, studies, size, seed, valid_fraction=valid_fraction, body_part=body_part)
    typer.echo(f"Wrote synthetic phantom data set to {summary.root}")
    output.echo_summary(summary)


@command("data-info")
def data_info(
    data: Path = typer.Argument(..., help="MURA v1.1 root, labelled CSV or class-folder tree."),
    body_part: str = typer.Option("all", help="XR_WRIST, …, or 'all'."),
) -> None:
    """Count studies, images and patients per split, body part and label."""
    from ..data.mura import summarise
    from ..data.sources import open_dataset

    index = open_dataset(data, body_part)
    output.echo_counts(summarise(list(index.train) + list(index.valid)), index)


@command()
def train(
    data: Optional[Path] = typer.Option(None, "--data", help="MURA v1.1 root, labelled CSV or folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to create."),
    body_part: Optional[str] = typer.Option(None, "--body-part", help="XR_WRIST (default), XR_ELBOW, …, all."),
    arch: Optional[str] = typer.Option(None, help="torchvision backbone (default densenet121)."),
    weights: Optional[str] = typer.Option(
        None, help="imagenet (default; downloaded once into the torch hub cache), none, or a file/checkpoint path."),
    offline: bool = typer.Option(False, "--offline", help="Never download (same as FRACTURESCAN_OFFLINE=1)."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (default 30)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default 32."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Square input size (default: the architecture's own, 224 for DenseNet121)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (default 1e-4)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
    max_train_images: Optional[int] = typer.Option(None, "--max-train-images", help="Subsample for quick runs."),
    threshold_method: Optional[str] = typer.Option(None, "--threshold-method", help="f1, youden or sensitivity."),
    target_sensitivity: Optional[float] = typer.Option(None, "--target-sensitivity"),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Preprocessed image cache folder."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file with any of these options."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last epoch."),
    nproc: int = typer.Option(1, "--nproc", help="Processes for DistributedDataParallel (one per GPU)."),
    compile_model: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    cuda_graph: Optional[bool] = typer.Option(
        None, "--cuda-graph/--no-cuda-graph",
        help="Capture the whole training step in a CUDA graph (one CUDA process; faster at small batches)."),
) -> None:
    """Train a classifier; writes config, history, TensorBoard logs and the best checkpoint."""
    from ..config import load_config
    from ..models.download import OFFLINE_ENV
    from ..training.loop import train as run_training

    if offline:  # through the environment, so torchrun's worker processes see it too
        os.environ[OFFLINE_ENV] = "1"
    overrides = {
        "data": str(data.resolve()) if data else None, "out": str(out) if out else None, "body_part": body_part,
        "arch": arch, "weights": weights, "epochs": epochs, "batch_size": batch_size,
        "image_size": image_size, "lr": lr, "device": device, "seed": seed,
        "max_train_images": max_train_images, "threshold_method": threshold_method,
        "target_sensitivity": target_sensitivity, "cache_dir": cache_dir, "compile": compile_model,
        "cuda_graph": cuda_graph,
    }
    if resume and out and (out / "config.yaml").is_file() and config is None:
        config = out / "config.yaml"
    cfg = load_config(config, overrides)
    if nproc > 1:
        raise typer.Exit(_launch_distributed(cfg, nproc, resume))
    result = run_training(cfg, resume=resume)
    if result is None:  # a non-zero rank under torchrun: rank 0 reports
        return
    typer.echo(
        f"Trained {result.epochs_run} epochs; best checkpoint: {result.best_dir}; "
        f"threshold {result.threshold:.3f} (chosen on the patient-level hold-out)"
    )
    output.echo_holdout(result.holdout_metrics)


def _launch_distributed(cfg: Any, nproc: int, resume: bool) -> int:
    """Re-run this training under torch.distributed.run with ``nproc`` processes."""
    import subprocess
    import tempfile

    from ..config import save_config

    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.yaml"
        save_config(cfg, config_file)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "fracturescan.train", "--config", str(config_file)] + (["--resume"] if resume else [])
        return subprocess.call(cmd)


_TTA_HELP = ("Test-time augmentation: average each image over its mirror image (and small rotations "
             "if the model was trained with them); 2-4x the time.")


@command()
def evaluate(
    run: Path = typer.Argument(..., help="Run directory (or checkpoint directory)."),
    split: str = typer.Option("valid", help="valid (MURA's test set) or train."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data set (default: the one the run trained on)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default RUN/eval_<split>)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for 95% intervals."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
    tta: bool = typer.Option(False, "--tta", help=_TTA_HELP),
) -> None:
    """Image- and study-level metrics with bootstrap intervals, figures and a report."""
    from ..evaluation.run import evaluate_run

    metrics, folder = evaluate_run(run, split=split, data=data, out=out, n_boot=n_boot, device=device, tta=tta)
    output.echo_metrics(metrics)
    typer.echo(f"Report: {folder / 'report.html'}")


@command()
def compare(
    runs: list[Path] = typer.Argument(..., help="Two or more evaluated runs (or eval folders); the first is the reference."),
    split: str = typer.Option("valid", help="The evaluated split to compare."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for comparison.md/.json and the ROC figure "
                                                            "(default ./comparison_<split>)."),
    n_boot: int = typer.Option(2000, "--n-boot", help="Paired bootstrap resamples of studies."),
) -> None:
    """Study-level metrics of several runs on the same studies, with paired 95% intervals of
    each run's difference from the first."""
    from ..evaluation.compare import compare_runs, comparison_markdown, load_evaluation, write_comparison

    loaded = [load_evaluation(run, split) for run in runs]
    names = [run.name for run in loaded]
    if len(set(names)) < len(names):  # e.g. a/best and b/best: name them by their folder
        loaded = [load_evaluation(run, split, name=f"{Path(run).resolve().parent.name}/{item.name}")
                  for run, item in zip(runs, loaded)]
    result = compare_runs(loaded, n_boot=n_boot)
    folder = write_comparison(result, loaded, out or Path(f"comparison_{split}"))
    typer.echo(comparison_markdown(result))
    typer.echo(f"Written to {folder}")


@command()
def predict(
    model: Path = typer.Argument(..., help="Run or checkpoint directory."),
    paths: list[Path] = typer.Argument(..., help="Image files, folders, a whole tree, or CSV lists of image paths "
                                                 "(a 'path' column and optionally 'study_id', or paths in the first column)."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write image and study rows as CSV (column 'level')."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write image and study results as JSON."),
    study_per_folder: bool = typer.Option(
        False, "--study-per-folder",
        help="Treat the images that share a folder as one study (default: a loose image is its own study; "
             "DICOM files group by StudyInstanceUID and MURA studyN folders by folder either way)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
    backend: str = typer.Option("auto", help="auto (ONNX Runtime when exported, on CPU), torch or onnx."),
    tta: bool = typer.Option(False, "--tta", help=_TTA_HELP),
    include_flagged: bool = typer.Option(False, "--include-flagged", help="Count images the input guard or their "
                                         "DICOM header flagged in their study's probability anyway."),
) -> None:
    """Per-image and per-study probability of abnormality and decision."""
    from ..data.inputs import collect_inputs
    from ..inference import Predictor

    inputs = collect_inputs(paths, study_per_folder=study_per_folder)  # before loading the model
    predictor = Predictor.from_checkpoint(model, device=device, backend=backend, tta=tta)
    images, studies = predictor.predict_paths(inputs, include_flagged=include_flagged)
    typer.echo(f"Grouping: {inputs.describe()}")
    output.echo_predictions(predictor, images, studies)
    if csv_out:
        output.write_predictions_csv(csv_out, images, studies, inputs.rules)
    if json_out:
        output.write_predictions_json(json_out, predictor, images, studies, inputs.rules)
    if all(i.error for i in images):
        raise FracturescanError(f"None of the {len(images)} given images could be read; first: {images[0].error}")


@command()
def export(
    model: Path = typer.Argument(..., help="Run or checkpoint directory."),
    onnx: bool = typer.Option(False, "--onnx", help="Write model.onnx (ONNX Runtime CPU inference)."),
    opset: int = typer.Option(17, help="ONNX opset (17 or newer)."),
    tolerance: float = typer.Option(1e-4, help="Largest logit difference vs torch accepted."),
) -> None:
    """Export a checkpoint for fast inference, checked against the torch model before it is kept."""
    from ..export import export_onnx

    if not onnx:
        raise FracturescanError("Choose an export format: pass --onnx.")
    result = export_onnx(model, opset=opset, tolerance=tolerance)
    typer.echo(f"Wrote {result.path} (opset {result.opset}, sha256 {result.sha256[:12]}…, "
               f"max |logit difference| vs torch {result.max_abs_diff:.1e}); "
               "predict now uses ONNX Runtime on the CPU automatically.")


@command()
def explain(
    model: Path = typer.Argument(..., help="Run or checkpoint directory."),
    images: Optional[list[Path]] = typer.Argument(None, help="Image files, study folders or a whole tree."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the <name>_heatmap.png overlays."),
    alpha: float = typer.Option(0.4, "--alpha", min=0.0, max=1.0, help="Heatmap opacity (0 to 1)."),
    evaluate: Optional[Path] = typer.Option(None, "--evaluate", help="Phantom data set: run the pointing game."),
    split: str = typer.Option("valid", "--split", help="Split scored by --evaluate."),
    margin: float = typer.Option(0.05, "--margin", min=0.0, max=0.5, help="Box dilation (fraction of image side)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Pointing-game JSON (default OUT or MODEL/pointing_<split>.json)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
    build_ref: Optional[Path] = typer.Option(
        None, "--build-reference",
        help="Training data (MURA root, CSV or folder): compute and store the checkpoint's typical-normal "
             "reference from its train split first (for checkpoints trained without one)."),
    method: str = typer.Option(
        "auto", "--method",
        help="auto (integrated gradients from the checkpoint's typical-normal reference when it has one, "
             "else Grad-CAM), grad-cam or reference-ig."),
) -> None:
    """Heatmap overlays of the abnormal class, or the pointing game on phantoms (--evaluate)."""
    from ..explain.files import explain_paths
    from ..explain.gradcam import check_method
    from ..explain.pointing import pointing_game, write_pointing_json
    from ..inference import Predictor

    check_method(method)  # before any model loading or data work
    if build_ref is not None:
        from ..explain.reference import build_reference

        ref = build_reference(model, build_ref, device=device)
        scale = "none" if ref.abnormal_peak is None else f"{ref.abnormal_peak:.3g}"
        typer.echo(f"Reference stored: {ref.layer} at {ref.input_size} px from {ref.n_images} normal images "
                   f"(colour scale {scale}).")
        if not images and evaluate is None:
            return
    if not images and evaluate is None:
        raise FracturescanError("Give image files/folders with --out DIR, or --evaluate DATA.")
    if images and out is None:
        raise FracturescanError("Give --out DIR: the folder to write the heatmap overlays to.")
    predictor = Predictor.from_checkpoint(model, device=device, backend="torch")
    if images:
        results = explain_paths(predictor, images, out, alpha, method=method)
        for r in results:
            if r.figure is not None:
                typer.echo(f"{r.source}\tP(abnormal)={r.probability:.3f}\t{r.figure}")
        failed = [r for r in results if r.error]
        if failed:
            more = f" ({len(failed)} of {len(results)} images failed)" if len(failed) > 1 else ""
            raise FracturescanError(f"{failed[0].error}{more}")
    if evaluate is not None:
        result = pointing_game(predictor, evaluate, split=split, margin=margin, method=method)
        target = json_out or (out or Path(model)) / f"pointing_{split}.json"
        write_pointing_json(result, target)
        score = "n/a" if result.score is None else f"{result.score:.3f}"
        typer.echo(f"Pointing game ({split}, {result.method} on {result.layer}, margin {margin:.0%}): {score} over "
                   f"{result.n_true_positive} true-positive images of {result.n_annotated_positive} annotated "
                   f"positives (all positives: {result.score_all_positives:.3f}; random peak ≈ "
                   f"{(result.chance or 0):.3f}). JSON: {target}")


from . import server  # noqa: E402,F401  (registers `app`, `serve` and `api-key`)
from . import doctor  # noqa: E402,F401  (registers `doctor`)
from . import db  # noqa: E402,F401  (registers `db upgrade|current|backup|restore`)
from . import pacs  # noqa: E402,F401  (registers `dicom-node` and `pacs`)
from . import users  # noqa: E402,F401  (registers `user`)
from . import ensemble  # noqa: E402,F401  (registers `ensemble`)
from . import calibrate  # noqa: E402,F401  (registers `calibrate`)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code."""
    try:
        app(args=argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
