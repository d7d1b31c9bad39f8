"""The one training step (training/step.py), as the trainer and the benches use it."""

from __future__ import annotations

import torch

from soundvcm.conditions import Batch
from soundvcm.objectives import LossOutput
from soundvcm.training.parallel import LocalEngine
from soundvcm.training.step import optimization_step


class _Squared:
    """loss = mean((w - target)^2) with a per-batch target; nan when the target is nan."""

    name, config, total_steps = "squared", None, 1

    def loss(self, net, batch, step, generator=None):
        err = (net.weight - batch.x0).square().mean(dim=-1)
        zeros = torch.zeros(err.shape[0])
        return LossOutput(loss=err.mean(), t=zeros, s=zeros, mse=err.detach())


def _net():
    net = torch.nn.Module()
    net.weight = torch.nn.Parameter(torch.zeros(1, 3))
    return net


def test_accumulated_micro_batches_average_their_gradients():
    targets = [torch.full((1, 3), 1.0), torch.full((1, 3), 3.0)]
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    out = optimization_step(LocalEngine(net, _Squared()), [(Batch(t, {}), None) for t in targets], opt, 0, lr=0.5,
                            grad_clip=1e9, accumulation=2)  # fmt: skip
    # the gradient is the mean of the micro-batches': (2(0 - 1) + 2(0 - 3)) / 3 / 2 per element = -4/3,
    # so one SGD step of 0.5 lands on w = 2/3; the logged loss is the mean of 1 and 9
    assert out.finite and out.loss == 5.0 and torch.allclose(net.weight, torch.full((1, 3), 2 / 3))
    assert opt.param_groups[0]["lr"] == 0.5 and out.t.shape == (2,)


def test_non_finite_loss_skips_the_update_and_leaves_no_gradients():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    out = optimization_step(LocalEngine(net, _Squared()), [(Batch(torch.full((1, 3), float("nan")), {}), None)], opt, 0,
                            lr=1.0, grad_clip=1.0)  # fmt: skip
    assert not out.finite and torch.equal(net.weight, torch.zeros(1, 3)) and net.weight.grad is None


class _Veto(LocalEngine):
    """An engine whose other rank had a non-finite loss."""

    def __init__(self, net):
        super().__init__(net, _Squared())
        self.seen = []

    def finish(self, params, finite):
        self.seen.append((finite, params[0].grad.clone()))
        return False


def test_the_engine_sees_the_gradients_and_can_veto_the_step():
    net = _net()
    engine = _Veto(net)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    out = optimization_step(engine, [(Batch(torch.ones(1, 3), {}), None)], opt, 0, lr=1.0, grad_clip=1.0)
    assert engine.seen[0][0] is True and torch.allclose(engine.seen[0][1], torch.full((1, 3), -2 / 3))
    assert not out.finite and torch.equal(net.weight, torch.zeros(1, 3)) and net.weight.grad is None


def test_clipping_bounds_the_gradient_norm():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    batches = [(Batch(torch.full((1, 3), 100.0), {}), None)]
    out = optimization_step(LocalEngine(net, _Squared()), batches, opt, 0, lr=1.0, grad_clip=1.0)
    assert out.grad_norm > 100 and abs(float(net.weight.detach().norm()) - 1.0) < 1e-5  # the step was clipped to norm 1
