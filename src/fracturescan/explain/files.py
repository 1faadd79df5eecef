"""Explain image files and folders into captioned ``<name>_heatmap.png`` figures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from tqdm.auto import tqdm

from ..data.images import read_image
from ..errors import FracturescanError
from .gradcam import METHOD_LABELS, explain_image
from .overlay import caption_lines, save_figure

if TYPE_CHECKING:
    from ..inference import Predictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainedFile:
    """One input: the figure written and its probability, or the error that stopped it."""

    source: Path
    figure: Path | None
    probability: float | None
    error: str | None = None


def figure_names(paths: list[Path]) -> list[str]:
    """``<stem>_heatmap.png`` per path; clashing names get parent folders prepended until unique.

    MURA names every file ``imageN.png``, so a whole tree needs ``patient_study_image`` names,
    while a lone file keeps its own stem.
    """
    def name(path: Path, depth: int) -> str:
        return "_".join([*path.parent.parts[len(path.parent.parts) - depth + 1 :], path.stem] if depth > 1
                        else [path.stem])

    depths = [1] * len(paths)
    while True:
        names = [name(p, d) for p, d in zip(paths, depths)]
        clashing = {n for n in names if names.count(n) > 1}
        grow = [i for i, n in enumerate(names) if n in clashing and depths[i] <= len(paths[i].parts)]
        if not grow:
            return [f"{n}_heatmap.png" for n in names]
        for i in grow:
            depths[i] += 1


def explain_paths(predictor: "Predictor", paths: Iterable[Path | str], out: Path, alpha: float = 0.4,
                  progress: bool = True, method: str = "auto") -> list[ExplainedFile]:
    """Write a captioned overlay for every image under ``paths`` (folders expand like predict).

    Unreadable files are returned with their error instead of stopping the others.

    Raises:
        ImageReadError: a path does not exist or a folder holds no image.
    """
    from ..data.inputs import collect_inputs

    files = [path for _, path in collect_inputs(paths)]
    synthetic = bool(predictor.metadata.synthetic)
    out = Path(out)
    results = []
    for source, name in tqdm(list(zip(files, figure_names(files))), desc="explaining", unit="image",
                             disable=not progress or len(files) < 5):
        try:
            image = read_image(source)
        except FracturescanError as exc:
            results.append(ExplainedFile(source, None, None, str(exc)))
            continue
        exp = explain_image(predictor, image, method=method)
        lines = caption_lines(exp.probability, predictor.threshold, synthetic, METHOD_LABELS[exp.method])
        figure = save_figure(out / name, image, exp.heatmap, lines, alpha)
        results.append(ExplainedFile(source, figure, exp.probability))
    return results
