"""How one training step's loss is computed and its gradients combined across processes.

Four engines, one interface (used by :func:`soundvcm.training.step.optimization_step`):

- ``local``: one process, ``objective.loss(net, batch)``.
- ``ddp``: PyTorch's ``DistributedDataParallel``. The whole objective (condition preparation,
  the no-grad guidance and target passes of Alg. 1, the one graded pass) runs inside one
  ``forward`` of a small module holding the network, so DDP sees one forward and one backward per
  micro-batch and its gradient buckets are all-reduced while the backward still runs.
  ``no_sync`` skips the all-reduce on all but the last micro-batch of an accumulated step.
  ``find_unused_parameters`` is on: a batch without dropped conditions never touches the learned
  null embeddings, and DDP must know not to wait for them.
- ``fsdp``: FSDP2 (``fully_shard``) on every joint and audio-only block and on the root, over a
  1-D mesh of all ranks: each rank keeps 1/R of those parameters, their gradients, their AdamW
  moments and their EMA copies. The frozen latent statistics and the empty-text features are left
  out of sharding (``ignored_params``), because data loading normalises latents outside the
  forward; the root's parameters are gathered before each micro-batch is drawn, because data
  loading also fills text-audio rows with the learned null visual features. Checkpoints gather
  whole tensors, so they are the same files as DDP's.
- ``allreduce``: one flat all-reduce of every gradient after the backward (no buckets, no
  overlap): the fallback for a loss whose graph DDP cannot follow (``--parallel allreduce``).

MeanFlow trains under DDP and FSDP2 like the others. Its loss differentiates through
``torch.func.jvp``, but the transform runs *inside* the one wrapped forward, on the inner
network, so DDP's reducer never sees functorch's wrapped tensors; the backward through the JVP's
graph fires the ordinary per-parameter gradient hooks (DDP's bucket all-reduce, FSDP's
reduce-scatter), and FSDP's unshard hooks run on the blocks inside the transform. The 2-process
tests check all three engines against accumulation for MeanFlow too.

Every engine computes the same update as one process accumulating the R x A micro-batches of the
step: each backward is of loss / A, and the reduction averages over the R ranks (Eq. 10's
expectation over the global batch).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from soundvcm.conditions import Batch
from soundvcm.objectives.base import LossOutput

ENGINES = ("auto", "ddp", "fsdp", "allreduce")
T = TypeVar("T")


def resolve_engine(name: str, world: int) -> str:
    """The engine a run uses: ``local`` on one process; ``auto`` is DDP."""
    if name not in ENGINES:
        raise ValueError(f"unknown parallel engine {name!r}; choose one of {', '.join(ENGINES)}")
    if world == 1:
        return "local"
    return "ddp" if name == "auto" else name


class _LossModule(nn.Module):
    """The objective's whole loss as one module call, so DDP/FSDP see one forward per micro-batch."""

    def __init__(self, net: nn.Module, objective):
        super().__init__()
        self.net = net
        self.objective = objective

    def forward(self, batch: Batch, step: int, generator: torch.Generator | None):
        out = self.objective.loss(self.net, batch, step, generator=generator)
        return out.loss, out.t, out.s, out.mse, out.extras


def _all_finite(finite: bool, device: torch.device) -> bool:
    flag = torch.tensor([1.0 if finite else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1)


class LocalEngine:
    """One process: the objective's loss on the (possibly compiled) network.

    Besides the step, an engine owns what distribution means for the rest of the trainer:
    :attr:`is_writer` (the one process that writes checkpoints, EMA snapshots, samples, logs),
    :meth:`gather` (whole tensors, collected where they must be: a collective on every rank when
    the state is sharded, on the writer alone otherwise), :meth:`mean` and :meth:`barrier`.
    """

    always_backward = False  # a non-finite loss skips its backward
    sharded = False  # parameters split over ranks (FSDP): gathering them is a collective

    def __init__(self, model: nn.Module, objective):
        self.model, self.objective = model, objective
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def gather(self, collect: Callable[[], T]) -> T | None:
        """``collect()``'s result on the writer (None on the other ranks); ``collect`` runs on every
        rank when the state is sharded (gathering it is a collective), on the writer alone otherwise."""
        if self.sharded or self.is_writer:
            out = collect()
            return out if self.is_writer else None
        return None

    def mean(self, value: float) -> float:
        """The mean of ``value`` over ranks (the logged loss is every rank's, not the writer's)."""
        if self.world == 1:
            return value
        total = torch.tensor([value], device=getattr(self, "device", None))
        dist.all_reduce(total)
        return float(total) / self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def loss(self, batch: Batch, step: int, generator: torch.Generator | None) -> LossOutput:
        return self.objective.loss(self.model, batch, step, generator=generator)

    def accumulating(self, last: bool) -> AbstractContextManager[Any]:
        """The context of one micro-batch's forward and backward (``last``: the step's last)."""
        return nullcontext()

    def before_batch(self) -> None:
        """Called before a micro-batch is drawn (data loading reads the learned null features)."""

    def finish(self, params: list[nn.Parameter], finite: bool) -> bool:
        """After every backward of the step: combine gradients; True when every rank was finite."""
        return finite


class AllReduceEngine(LocalEngine):
    """One flat all-reduce of all gradients after the backward (no buckets, no overlap: a fallback)."""

    def __init__(self, model: nn.Module, objective, device: torch.device):
        super().__init__(model, objective)
        self.device, self.world = device, dist.get_world_size()

    def finish(self, params: list[nn.Parameter], finite: bool) -> bool:
        finite = _all_finite(finite, self.device)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([gr.flatten() for gr in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, gr in zip(params, grads):
            p.grad = flat[offset : offset + gr.numel()].view_as(gr).clone()
            offset += gr.numel()
        return finite


class DDPEngine(LocalEngine):
    """DistributedDataParallel around the whole loss (bucketed all-reduce overlapping the backward)."""

    always_backward = True  # every rank runs every backward, or DDP's collectives would not match

    def __init__(self, model: nn.Module, objective, device: torch.device):
        super().__init__(model, objective)
        from torch.nn.parallel import DistributedDataParallel

        self.device = device
        self.module = DistributedDataParallel(
            _LossModule(model, objective),
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
            forward_sync_buffers=False,  # the network's buffers are constants (RoPE tables)
        )

    def loss(self, batch: Batch, step: int, generator: torch.Generator | None) -> LossOutput:
        loss, t, s, mse, extras = self.module(batch, step, generator)
        return LossOutput(loss=loss, t=t, s=s, mse=mse, extras=extras)

    def accumulating(self, last: bool) -> AbstractContextManager[Any]:
        return nullcontext() if last else self.module.no_sync()

    def finish(self, params: list[nn.Parameter], finite: bool) -> bool:
        return _all_finite(finite, self.device)


def frozen_network_tensors(net: nn.Module) -> set[nn.Parameter]:
    """Parameters read outside the forward (latent statistics) or never trained: kept whole by FSDP."""
    return {p for name, p in net.named_parameters() if not p.requires_grad and "." not in name}


class FSDPEngine(DDPEngine):
    """FSDP2: parameters, gradients, optimizer moments and EMA copies sharded over all ranks."""

    sharded = True

    def __init__(self, net: nn.Module, model: nn.Module, objective, device: torch.device):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        LocalEngine.__init__(self, model, objective)
        self.device = device
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        for block in [*getattr(net, "joint_blocks", []), *getattr(net, "fused_blocks", [])]:
            fully_shard(block, mesh=mesh)
        self.module: Any = fully_shard(
            _LossModule(model, objective), mesh=mesh, ignored_params=frozen_network_tensors(net)
        )

    def accumulating(self, last: bool) -> AbstractContextManager[Any]:
        self.module.set_requires_gradient_sync(last)
        return nullcontext()

    def before_batch(self) -> None:
        # text-audio rows take the learned null visual features (data/mixing.py) outside the
        # forward: gather the root's parameters now; their gradients are reduce-scattered with
        # the root's after the backward, as if they had been used inside it
        self.module.unshard()


def build_engine(name: str, net: nn.Module, model: Any, objective, device: torch.device) -> LocalEngine:
    """``net``: the network; ``model``: what the objective calls (the network, or its compiled form)."""
    if name == "local":
        return LocalEngine(model, objective)
    if name == "allreduce":
        return AllReduceEngine(model, objective, device)
    if name == "ddp":
        return DDPEngine(model, objective, device)
    if name == "fsdp":
        return FSDPEngine(net, model, objective, device)
    raise ValueError(f"unknown engine {name!r}")


# ----- full tensors from sharded ones (checkpoints, EMA snapshots, samples) ---------------------
def is_sharded(value: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(value, DTensor)


def full(value: Tensor) -> Tensor:
    """The whole tensor (a collective on every rank for a sharded one), detached, on the CPU."""
    if is_sharded(value):
        value = value.full_tensor()  # type: ignore[attr-defined]
    return value.detach().cpu()


def full_state(state: dict[str, Any]) -> dict[str, Any]:
    return {k: full(v) if isinstance(v, Tensor) else v for k, v in state.items()}


def shard_like(value: Tensor, like: Tensor) -> Tensor:
    """A full tensor laid out as ``like`` (this rank's shard of it when ``like`` is sharded)."""
    if is_sharded(like):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(value.to(like.device, like.dtype), like.device_mesh, like.placements)  # type: ignore[attr-defined]
    return value.to(like.device, like.dtype)


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state dict with whole tensors (same layout whatever the engine)."""
    state = optimizer.state_dict()
    return {"state": {i: full_state(s) for i, s in state["state"].items()}, "param_groups": state["param_groups"]}


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a whole-tensor optimizer state, sharding each moment like its parameter."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    converted = {}
    for idx, entry in state["state"].items():
        p = params[int(idx)]
        converted[idx] = {
            k: shard_like(v, p) if isinstance(v, Tensor) and v.shape == p.shape else v for k, v in entry.items()
        }
    optimizer.load_state_dict({"state": converted, "param_groups": state["param_groups"]})
