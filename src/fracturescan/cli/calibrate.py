"""``fracturescan calibrate RUN DATA``: local recalibration of an existing checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import output
from .core import command


@command()
def calibrate(
    model: Path = typer.Argument(..., help="Run or checkpoint directory."),
    data: Path = typer.Argument(..., help="Labelled studies of this site: MURA root, CSV or class folders."),
    split: str = typer.Option("train", help="Which split of DATA to use (never the split you test on)."),
    body_part: Optional[str] = typer.Option(None, help="Body parts of DATA to use (default: the model's)."),
    target_sensitivity: float = typer.Option(0.95, help="Sensitivity of the high-sensitivity point."),
    target_specificity: float = typer.Option(0.95, help="Specificity of the high-specificity point."),
    keep: float = typer.Option(0.95, help="Share of in-distribution images the input guard keeps."),
    guard: bool = typer.Option(True, "--guard/--no-guard", help="Also refit the input guard on DATA."),
    device: str = typer.Option("auto", help="auto, cpu, cuda."),
) -> None:
    """Refit calibration, the abnormal/doubt/normal operating points and the input guard on DATA,
    and record in the checkpoint which data were used (older checkpoints gain them this way)."""
    from ..trust import calibrate_checkpoint

    if split == "valid":
        typer.echo("note: calibrating on 'valid' makes later evaluations on 'valid' optimistic.", err=True)
    fit = calibrate_checkpoint(model, data, split=split, body_part=body_part, device=device,
                               target_sensitivity=target_sensitivity, target_specificity=target_specificity,
                               keep=keep, guard=guard)
    output.echo_trust_fit(fit)
