"""The shared optimisation step (training loop and benchmark) and its CUDA-graph guard rails."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from fracturescan.config import TrainConfig
from fracturescan.errors import ConfigError
from fracturescan.training.step import TrainStep, check_cuda_graph, keep_tensor_lr, make_optimizer, tensor_lrs


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 1), torch.nn.Flatten(0))


def test_step_equals_a_hand_written_weighted_bce_adam_step() -> None:
    model = _tiny_model()
    reference = copy.deepcopy(model)
    x = torch.randn(6, 3, 12, 12)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    weights = (0.3, 0.7)
    step = TrainStep(model, make_optimizer(model, 1e-2, 0.0, cuda_graph=False), weights, torch.device("cpu"), amp=True)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    for _ in range(3):
        loss = step(x, y)
        logits = reference(x)
        w = torch.where(y == 1, weights[1], weights[0])
        ref_loss = (w * F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")).mean()
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
        assert not loss.requires_grad  # detached: reading it never keeps the graph alive
        assert float(loss) == pytest.approx(float(ref_loss.detach()), rel=1e-5)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_cuda_graph_refused_without_cuda() -> None:
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        check_cuda_graph(torch.device("cpu"), False, False)


def test_cuda_graph_refuses_ddp_and_compile_even_on_cuda() -> None:
    with pytest.raises(ConfigError, match="single-process"):
        check_cuda_graph(torch.device("cuda"), True, False)
    with pytest.raises(ConfigError, match="alternatives"):
        check_cuda_graph(torch.device("cuda"), False, True)
    with pytest.raises(ConfigError, match="alternatives"):
        TrainConfig(data="x", cuda_graph=True, compile=True)


def test_scheduler_reduction_reaches_a_tensor_learning_rate() -> None:
    # The captured update reads the learning rate from a tensor: a plateau step must change that
    # tensor's value in place, not swap in a float the graph would never see.
    model = _tiny_model()
    lr = torch.tensor(0.1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    for _ in range(3):
        sched.step(1.0)  # no improvement after the first: reduce
        keep_tensor_lr(opt, [lr])
    assert opt.param_groups[0]["lr"] is lr
    assert float(lr) == pytest.approx(0.1 * 0.5 ** 2)
    # The same when a scheduler assigns a float (older torch versions did).
    opt.param_groups[0]["lr"] = 0.001
    keep_tensor_lr(opt, [lr])
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.001)


def test_cli_cuda_graph_on_cpu_is_one_clear_error(tmp_path) -> None:
    from typer.testing import CliRunner

    from fracturescan.cli.main import app

    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                                      "--device", "cpu", "--cuda-graph"])
    assert result.exit_code == 1
    assert "needs a CUDA device" in result.output


def test_resumed_float_learning_rates_become_tensors_once() -> None:
    model = _tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)  # as loaded from a run without graphs
    lrs = tensor_lrs(opt, torch.device("cpu"))
    assert opt.param_groups[0]["lr"] is lrs[0] and float(lrs[0]) == pytest.approx(0.01)
    assert tensor_lrs(opt, torch.device("cpu"))[0] is lrs[0]  # already tensors: kept as they are
