"""Integrated gradients from the typical-normal reference: the attribution's defining properties,
the reference file (computed, stored, verified) and how explain_image picks its method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fracturescan.errors import CheckpointError, FracturescanError
from fracturescan.explain import explain_image, select_cam_layer
from fracturescan.explain.integrated import integrated_gradients
from fracturescan.explain.reference import (REFERENCE_FILE, compute_reference, load_reference,
                                            save_reference)
from fracturescan.inference import Predictor
from fracturescan.models.checkpoint import read_metadata, save_checkpoint
from fracturescan.models.network import FractureNet
from fracturescan.models.preprocessing import resolve_preprocessing

#: The densenet121 contract at 64 px (ImageNet normalisation), as training would resolve it.
CONTRACT = resolve_preprocessing("densenet121", input_size=64)

from ..tolerances import (assert_within, forward_bound, logit_magnitude, network_shape, probability_bound,
                          sum_bound)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _model(arch: str = "resnet18") -> FractureNet:
    torch.manual_seed(4)
    return FractureNet(arch, hidden=16).eval()


def _pixels(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8))


def _with_layer_output(model: nn.Module, layer: nn.Module, x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The model's logits when ``layer`` outputs ``value`` (an independent split forward)."""
    handle = layer.register_forward_hook(lambda _m, _i, out: value.to(out.dtype))
    try:
        with torch.no_grad():
            return model(x).reshape(-1)
    finally:
        handle.remove()


def test_attributions_sum_to_the_logit_difference_and_match_a_fine_riemann_sum() -> None:
    model = _model()

    name, layer = select_cam_layer(model, 64)
    ref = compute_reference(model, _pixels(6, 64, 1), preprocessing=CONTRACT).activation
    x = CONTRACT.normalise(_pixels(1, 64, 9))
    attr, logit, ref_logit = integrated_gradients(model, layer, x, ref, steps=64)
    assert attr.shape == ref.shape[1:]
    layers, fan_in = network_shape(model)
    bound = float(forward_bound(logit_magnitude(model, x), layers, fan_in)[0])
    with torch.no_grad():
        assert abs(logit - float(model(x)[0])) <= bound
    assert abs(ref_logit - float(_with_layer_output(model, layer, x, ref[None])[0])) <= bound
    assert abs(logit - ref_logit) > 1e-3  # not a trivial zero difference
    # Completeness: the cells share out exactly logit - reference logit (up to quadrature error).
    assert float(attr.sum()) == pytest.approx(logit - ref_logit, rel=0.02, abs=1e-4)
    # Independent check: a midpoint Riemann sum over 400 path points (not the 64 above), the
    # gradient at each point taken by autograd on its own output; points go through the rest of
    # the network 100 at a time (images in a batch are independent in eval mode).
    store = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: store.setdefault("a", out.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    a = store["a"][0]
    grads = torch.zeros_like(a)
    for chunk in ((torch.arange(400) + 0.5) / 400).split(100):
        points = (ref + chunk.view(-1, 1, 1, 1) * (a - ref)).requires_grad_(True)
        h = layer.register_forward_hook(lambda _m, _i, out, p=points: p)
        out = model(x).reshape(-1)
        h.remove()
        assert out.shape == chunk.shape  # one logit per path point
        grads += torch.autograd.grad(out.sum(), points)[0].sum(0) / 400
    expected = (grads * (a - ref)).sum(0)
    torch.testing.assert_close(attr, expected, rtol=0.05, atol=0.02 * float(expected.abs().max()))
    assert not any(p.grad is not None for p in model.parameters())  # no parameter gradients kept


def test_reference_is_the_mean_activation_of_the_given_images() -> None:
    model = _model()
    pixels = _pixels(5, 64, 2)
    ref = compute_reference(model, pixels, preprocessing=CONTRACT, batch_size=2)  # several batches, the last one partial
    name, layer = select_cam_layer(model, 64)
    store = []
    handle = layer.register_forward_hook(lambda _m, _i, out: store.append(out.detach()))
    with torch.no_grad():
        # The same batch shapes as above: a forward pass of 1 image and one of 2 may take other
        # kernels with other rounding, which is not what this test is about.
        for start in range(0, 5, 2):
            model(CONTRACT.normalise(pixels[start:start + 2]))
    handle.remove()
    activations = torch.cat(store)
    # Two float32 means of the same 5 terms, summed in different orders, then divided by 5.
    bound = sum_bound(activations.abs().sum(0) / 5, n=5, extra_ops=1)
    assert_within(ref.activation, activations.mean(0), bound, "reference activation")
    assert (ref.layer, ref.input_size, ref.n_images) == (name, 64, 5)


def test_reference_round_trip_tamper_and_method_choice(tmp_path) -> None:
    model = _model()
    ckpt = save_checkpoint(tmp_path / "best", model, {"input_size": 64, "threshold": 0.5})
    image = np.random.default_rng(3).random((70, 50)).astype(np.float32)
    plain = Predictor.from_checkpoint(ckpt, device="cpu")
    assert plain.reference is None
    assert explain_image(plain, image).method == "grad-cam"  # no reference: Grad-CAM
    with pytest.raises(FracturescanError, match="no explanation reference"):
        explain_image(plain, image, method="reference-ig")

    ref = compute_reference(model, _pixels(4, 64, 5), preprocessing=CONTRACT)
    save_reference(ckpt, ref)
    meta = read_metadata(ckpt)
    assert meta.reference_layer == ref.layer and len(meta.reference_sha256) == 64
    loaded = load_reference(ckpt)
    torch.testing.assert_close(loaded.activation, ref.activation)
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    auto = explain_image(predictor, image)
    assert auto.method == "reference-ig" and auto.reference_logit is not None
    expected = float(predictor.probabilities(predictor.preprocess(image)[None])[0])
    x = predictor.preprocessing.normalise(torch.from_numpy(predictor.preprocess(image)[None]))
    assert abs(auto.probability - expected) <= float(probability_bound(predictor.model, x)[0])
    assert explain_image(predictor, image, method="grad-cam").method == "grad-cam"
    # A heatmap of a different size keeps Grad-CAM (the reference belongs to one grid).
    # (the checkpoint caches its verified reference; replace that cached value)
    predictor.checkpoint.__dict__["reference"] = type(ref)(ref.layer, 96, ref.activation, ref.n_images)
    assert explain_image(predictor, image).method == "grad-cam"
    # A modified reference file is refused, like tampered weights.
    raw = bytearray((ckpt / REFERENCE_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (ckpt / REFERENCE_FILE).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="reference_sha256"):
        Predictor.from_checkpoint(ckpt, device="cpu")
    (ckpt / REFERENCE_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_reference(ckpt)


def test_mismatched_reference_shape_is_a_clear_error() -> None:
    model = _model()
    _, layer = select_cam_layer(model, 64)
    with pytest.raises(ValueError, match="does not match the layer's activation"):
        integrated_gradients(model, layer, torch.zeros(1, 3, 64, 64), torch.zeros(7, 3, 3))


def test_colour_scale_is_the_median_abnormal_peak_and_keeps_weak_maps_faint(tmp_path) -> None:
    from dataclasses import replace

    from fracturescan.explain.gradcam import upsample
    from fracturescan.explain.reference import calibrate

    model = _model()
    ref = compute_reference(model, _pixels(4, 64, 5), preprocessing=CONTRACT)
    abnormal = _pixels(5, 64, 8)
    calibrated = calibrate(model, ref, abnormal, preprocessing=CONTRACT)
    _, layer = select_cam_layer(model, 64)
    peaks = [float(integrated_gradients(model, layer, CONTRACT.normalise(abnormal[i:i + 1]), ref.activation)[0]
                   .clamp_min(0).max()) for i in range(5)]
    assert calibrated.abnormal_peak == float(np.median(peaks))  # the same computation, image by image
    ckpt = save_checkpoint(tmp_path / "best", model, {"input_size": 64, "threshold": 0.5})
    save_reference(ckpt, calibrated)
    assert load_reference(ckpt).abnormal_peak == pytest.approx(calibrated.abnormal_peak)

    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    image = np.random.default_rng(4).random((60, 40)).astype(np.float32)
    own = explain_image(replace_reference(predictor, replace(calibrated, abnormal_peak=None)), image)
    assert own.heatmap.max() == pytest.approx(1.0)  # no scale: stretched to its own maximum
    faint = explain_image(replace_reference(predictor, replace(calibrated, abnormal_peak=1e6)), image)
    assert faint.heatmap.max() < 1e-3 and faint.peak == own.peak  # same place, far weaker colour
    # upsample's full scale, by hand: a 1x2 map [1, 3] scaled to 6 keeps 0.5 at its maximum
    assert upsample(np.array([[1.0, 3.0]]), (1, 2), full_scale=6.0).max() == pytest.approx(0.5)
    assert upsample(np.array([[1.0, 3.0]]), (1, 2), full_scale=2.0).max() == pytest.approx(1.0)


def replace_reference(predictor: Predictor, reference) -> Predictor:
    predictor.checkpoint.__dict__["reference"] = reference  # the checkpoint caches its verified reference
    return predictor
