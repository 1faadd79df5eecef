"""The ``fracturescan`` command line: a thin shell over the library.

Every user mistake surfaces as one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ..errors import FracturescanError
from . import output

app = typer.Typer(
    name="fracturescan",
    help="Detect fractures and other abnormalities in musculoskeletal radiographs (MURA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def command(name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command whose FracturescanErrors become one line on stderr and exit code 1."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except FracturescanError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from None

        return app.command(name)(guarded)

    return register


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


@command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to create (becomes the MURA-v1.1 style root)."),
    studies: int = typer.Option(300, help="Number of studies (train + valid)."),
    size: int = typer.Option(256, help="Image height in pixels."),
    seed: int = typer.Option(0, help="Random seed (same seed, same files)."),
    valid_fraction: float = typer.Option(0.2, help="Share of studies in the valid split."),
) -> None:
    """Generate SYNTHETIC wrist phantoms in the exact MURA v1.1 layout (for tests and demos)."""
    from ..data.synth import generate_mura_phantoms

    summary = generate_mura_phantoms(out, studies, size, seed, valid_fraction=valid_fraction)
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
    weights: Optional[str] = typer.Option(None, help="imagenet (default), none, or a file/checkpoint path."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (default 30)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default 32."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Square input size (default 224)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (default 1e-4)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:N."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
    max_train_images: Optional[int] = typer.Option(None, "--max-train-images", help="Subsample for quick runs."),
    threshold_method: Optional[str] = typer.Option(None, "--threshold-method", help="f1, youden or sensitivity."),
    target_sensitivity: Optional[float] = typer.Option(None, "--target-sensitivity"),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Preprocessed image cache folder."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file with any of these options."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last epoch."),
) -> None:
    """Train a classifier; writes config, history, TensorBoard logs and the best checkpoint."""
    from ..config import load_config
    from ..training.loop import train as run_training

    overrides = {
        "data": str(data) if data else None, "out": str(out) if out else None, "body_part": body_part,
        "arch": arch, "weights": weights, "epochs": epochs, "batch_size": batch_size,
        "image_size": image_size, "lr": lr, "device": device, "seed": seed,
        "max_train_images": max_train_images, "threshold_method": threshold_method,
        "target_sensitivity": target_sensitivity, "cache_dir": cache_dir,
    }
    if resume and out and (out / "config.yaml").is_file() and config is None:
        config = out / "config.yaml"
    cfg = load_config(config, overrides)
    result = run_training(cfg, resume=resume)
    typer.echo(
        f"Trained {result.epochs_run} epochs; best checkpoint: {result.best_dir}; "
        f"threshold {result.threshold:.3f} (chosen on the patient-level hold-out)"
    )
    output.echo_holdout(result.holdout_metrics)


@command()
def evaluate(
    run: Path = typer.Argument(..., help="Run directory (or checkpoint directory)."),
    split: str = typer.Option("valid", help="valid (MURA's test set) or train."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data set (default: the one the run trained on)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default RUN/eval_<split>)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for 95% intervals."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
) -> None:
    """Image- and study-level metrics with bootstrap intervals, figures and a report."""
    from ..evaluation.run import evaluate_run

    metrics, folder = evaluate_run(run, split=split, data=data, out=out, n_boot=n_boot, device=device)
    output.echo_metrics(metrics)
    typer.echo(f"Report: {folder / 'report.html'}")


@command()
def predict(
    model: Path = typer.Argument(..., help="Run or checkpoint directory."),
    paths: list[Path] = typer.Argument(..., help="Image files, study folders or a whole tree."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write per-image results as CSV."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write image and study results as JSON."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
) -> None:
    """Per-image and per-study probability of abnormality and decision."""
    from ..inference import Predictor

    predictor = Predictor.from_checkpoint(model, device=device)
    images, studies = predictor.predict_paths(paths)
    output.echo_predictions(predictor, images, studies)
    if csv_out:
        output.write_predictions_csv(csv_out, images)
    if json_out:
        output.write_predictions_json(json_out, predictor, images, studies)
    if all(i.error for i in images):
        raise FracturescanError("None of the given images could be read.")


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
