"""``fracturescan ensemble``: combine trained runs into one checkpoint (mean of probabilities)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .core import command


@command()
def ensemble(
    runs: list[Path] = typer.Argument(..., help="Two or more run (or checkpoint) directories."),
    out: Path = typer.Option(..., "--out", help="Checkpoint directory to create."),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="Decision threshold (default: the mean of the members' thresholds)."),
) -> None:
    """Build an ensemble checkpoint: the mean of the members' (calibrated) probabilities, loadable
    by predict, evaluate, explain, export, the app and the API like any checkpoint."""
    from ..ensemble import build_ensemble, members_of
    from ..models.checkpoint import read_metadata

    directory = build_ensemble(runs, out, threshold=threshold)
    meta = read_metadata(directory)
    names = ", ".join(m.name for m in members_of(meta))
    typer.echo(f"Wrote ensemble of {len(runs)} models ({names}) to {directory}; threshold {meta.threshold:.3f} "
               f"({meta.threshold_method}).")
