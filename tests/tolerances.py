"""Float tolerances derived from the arithmetic a test checks, not picked by hand.

Rounding model (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1, §4.2):
each float32 operation is exact up to a factor (1 + d) with |d| <= u = eps/2 = 2**-24, so a sum
of n terms computed in ANY order is within ``gamma(n - 1) * sum(|terms|)`` of the exact sum, where
``gamma(k) = k*u / (1 - k*u)``. Two computations of the same sum in different orders (threads,
batch shapes, vectorised kernels) therefore differ by at most twice that. The helpers below turn
this into elementwise bounds; a test states which sums its two sides take.
"""

from __future__ import annotations

import numpy as np
import torch

#: Unit roundoff of float32 (half the machine epsilon): the largest relative error of one operation.
U32 = float(np.finfo(np.float32).eps) / 2


def gamma(k: int, u: float = U32) -> float:
    """Higham's gamma_k = k u / (1 - k u): relative error bound of k chained float operations."""
    if k * u >= 1:
        raise ValueError(f"gamma({k}) undefined: k*u >= 1")
    return k * u / (1 - k * u)


def sum_bound(abs_sum: torch.Tensor | np.ndarray | float, n: int, extra_ops: int = 0) -> torch.Tensor | np.ndarray | float:
    """Largest difference between two float32 evaluations of the same n-term sum (any orders).

    ``abs_sum`` is the sum of the terms' absolute values (elementwise for tensors); ``extra_ops``
    counts further roundings on each side (a division for a mean, a scaling).
    """
    return 2 * gamma(max(n - 1, 0) + extra_ops) * abs_sum


def assert_within(actual: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray,
                  bound: torch.Tensor | np.ndarray | float, what: str = "values") -> None:
    """Elementwise |actual - expected| <= bound, with the worst element in the message."""
    a = torch.as_tensor(np.asarray(actual) if not isinstance(actual, torch.Tensor) else actual).double()
    e = torch.as_tensor(np.asarray(expected) if not isinstance(expected, torch.Tensor) else expected).double()
    b = torch.as_tensor(bound if not isinstance(bound, np.ndarray) else np.asarray(bound)).double()
    assert a.shape == e.shape, f"{what}: shapes {tuple(a.shape)} and {tuple(e.shape)} differ"
    excess = (a - e).abs() - b
    worst = int(excess.argmax())
    assert float(excess.flatten()[worst]) <= 0, (
        f"{what}: |{float(a.flatten()[worst])!r} - {float(e.flatten()[worst])!r}| exceeds the rounding bound "
        f"{float(b.expand_as(a).flatten()[worst])!r}")


#: Confidence factor of the probabilistic bound below: a bound of lambda*sqrt(n)*u fails with
#: probability at most 2*exp(-lambda**2/2), about 3e-8 for lambda = 6.
LAMBDA = 6.0


def network_shape(model: torch.nn.Module) -> tuple[int, int]:
    """(layers, fan_in): how many Conv2d/Linear layers the model has (an upper bound on the
    reductions on any input-to-output path) and the longest single reduction among them."""
    layers, fan_in = 0, 1
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            k = module.in_features
        else:
            continue
        layers, fan_in = layers + 1, max(fan_in, k)
    return layers, fan_in


def forward_bound(magnitude: torch.Tensor | float, layers: int, fan_in: int) -> torch.Tensor | float:
    """How far two float32 evaluations of one network on one input may lie apart when they use
    other kernels (batch shape, thread count, ONNX Runtime instead of torch).

    A deterministic bound over a whole network is far too loose to test anything, so this uses
    the probabilistic model of Higham & Mary (SIAM J. Sci. Comput. 41(5), 2019, Thm 3.1): the n
    roundings along a path of ``layers`` reductions of at most ``fan_in`` terms each behave as
    independent errors, within lambda*sqrt(n)*u of ``magnitude`` (the sum of the absolute values
    of the output's own terms) with probability 1 - 2 exp(-lambda^2/2); times 2 for two evaluations.
    Normalisation layers keep each layer's scale near the output's, which this takes as given.
    """
    return 2 * LAMBDA * float(np.sqrt(layers * fan_in)) * U32 * magnitude


def logit_magnitude(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per image, the sum of |terms| of the model's last Linear layer (|W| |h| + |b|): the scale
    the rounding of the logit is relative to."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    h = seen[0].abs().double()
    magnitude = h @ last.weight.detach().abs().double().T
    if last.bias is not None:
        magnitude = magnitude + last.bias.detach().abs().double()
    return magnitude.reshape(-1)


def probability_bound(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:func:`forward_bound` for sigmoid probabilities of the images ``x`` (normalised batch):
    the sigmoid's slope is at most 1/4, so probabilities lie 4 times closer than logits."""
    layers, fan_in = network_shape(model)
    return forward_bound(logit_magnitude(model, x), layers, fan_in) / 4


def predictor_probability_bound(predictor: object, sources: list) -> torch.Tensor:
    """:func:`probability_bound` for image files or bytes as a Predictor reads and resizes them."""
    from fracturescan.data.images import read_image
    from fracturescan.data.transforms import normalise

    meta = predictor.metadata  # type: ignore[attr-defined]
    pixels = np.stack([predictor.preprocess(read_image(s)) for s in sources])  # type: ignore[attr-defined]
    x = normalise(torch.from_numpy(pixels), tuple(meta.mean), tuple(meta.std), meta.channels)
    return probability_bound(predictor.model, x)  # type: ignore[attr-defined]
