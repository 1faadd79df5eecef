"""Layer-wise integrated gradients from the "typical normal" reference to the image.

For the explained layer's activation ``A`` of one image and the reference ``R`` (the mean
activation of normal training images, :mod:`.reference`), the attribution of feature cell
``(c, i, j)`` is ``(A - R)[c, i, j]`` times the gradient of the abnormal logit averaged along the
straight path from ``R`` to ``A`` (Sundararajan et al., 2017, applied at a hidden layer). Summed
over channels it gives one value per grid cell; the cells sum to ``logit(A) - logit(R)`` up to
the quadrature error (completeness), so the map divides exactly the part of the score that
separates this image from a typical normal one. The heatmap keeps the positive part.

The trunk up to the layer runs once; only the rest of the network runs on the ``steps`` path
points (a forward hook swaps the layer's output for the whole path), so at the final layer
(224 px and up) this costs little more than one prediction.
"""

from __future__ import annotations

import torch
from torch import nn

#: Path points of the midpoint rule (the completeness error shrinks as 1 / steps^2).
DEFAULT_STEPS = 16


def integrated_gradients(model: nn.Module, layer: nn.Module, inputs: torch.Tensor, reference: torch.Tensor,
                         steps: int = DEFAULT_STEPS) -> tuple[torch.Tensor, float, float]:
    """Attribution map ``(h, w)``, the image's logit and the reference's logit, for ONE image.

    ``inputs`` is the normalised ``(1, C, H, W)`` batch; ``reference`` the ``(C, h, w)`` mean
    activation of ``layer``. The model is put in (and left in) eval mode; no parameter gradient
    is accumulated.
    """
    if inputs.shape[0] != 1:
        raise ValueError(f"integrated_gradients explains one image at a time, got a batch of {inputs.shape[0]}")
    model.eval()
    reference = reference.to(inputs.device, torch.float32)
    # Path points: t = 0 (the reference's own logit), the midpoints of `steps` equal slices
    # (the quadrature), and t = 1 (the image itself).
    t = torch.cat([torch.zeros(1), (torch.arange(steps, dtype=torch.float32) + 0.5) / steps, torch.ones(1)])
    t = t.to(inputs.device).view(-1, 1, 1, 1)
    state: dict[str, torch.Tensor] = {}

    def swap(_m: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
        activation = out.detach().float()[0]
        if activation.shape != reference.shape:
            raise ValueError(f"reference {tuple(reference.shape)} does not match the layer's activation "
                             f"{tuple(activation.shape)}: it was made for another layer or input size")
        state["delta"] = activation - reference
        state["path"] = (reference[None] + t * state["delta"][None]).requires_grad_(True)
        return state["path"].to(out.dtype)

    with torch.enable_grad():
        handle = layer.register_forward_hook(swap)
        try:
            logits = model(inputs).reshape(-1)  # the trunk runs once; the rest on every path point
        finally:
            handle.remove()
        (grads,) = torch.autograd.grad(logits[1:-1].sum(), state["path"])
    attribution = (grads[1:-1].mean(0) * state["delta"]).sum(0)
    return attribution.detach(), float(logits[-1].detach()), float(logits[0].detach())
