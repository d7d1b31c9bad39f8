"""A narrower HiFi-GAN cut out of the teacher: the starting point of the pruned student (issue 22).

Distilling HiFi-GAN V2's shape from scratch kept the events but not the timbre (FD 3.7-9x the
teacher's ceiling, BENCHMARKS issue 22). This student keeps V1's layout and only narrows it:
``channels`` after the input conv instead of 512, halved at each upsampling as in V1, so its
multiply-adds scale as (channels / 512)^2 (448: 0.77x, 384: 0.56x). It starts as the teacher
with its least used channels removed, so it begins near the teacher's function instead of noise,
and :class:`~soundvcm.training.vocoder.VocoderDistiller` fine-tunes it from there.

Which channels stay (magnitude pruning, the simplest criterion that keeps the network's wiring):

* the residual stream of each stage (the up-sampling conv's output, every ResBlock's input and
  output, the next stage's input) is one index set, since ResBlocks add into it: its channels are
  ranked by the summed squared weights of every conv that writes into or reads from them, each
  conv's share normalised by its total, so wide and narrow convs count alike;
* each inner channel of a ResBlock pair (``convs1[j]``'s output = ``convs2[j]``'s input) is ranked
  on its own by the same measure over those two convs;
* the input conv's outputs are ranked with the first stage's reader (``ups[0]``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from soundvcm.encoders.hifigan import HiFiGAN

REFIT_SEGMENTS = 16  # bank segments (the last ones: never held out) that the least-squares refit sees


def _share(weight: Any, dim: int) -> Tensor:
    """Each channel's fraction of a conv's squared weight along ``dim`` (0: out, 1: in of Conv1d)."""
    w = weight.detach().float().pow(2)
    per = w.sum(dim=[d for d in range(w.ndim) if d != dim])
    return per / per.sum().clamp_min(1e-12)


def _top(score: Tensor, keep: int) -> Tensor:
    return torch.sort(torch.topk(score, keep).indices).values


def _inner_indices(c1: Any, c2: Any, keep: int) -> Tensor:
    """The kept inner channels of a ResBlock pair (``c1``'s outputs = ``c2``'s inputs)."""
    return _top(_share(c1.weight, 0) + _share(c2.weight, 1), keep)


def _stage_blocks(model: HiFiGAN, stage: int) -> list[Any]:
    return list(model.resblocks[stage * model.num_kernels : (stage + 1) * model.num_kernels])


def _stream_indices(teacher: HiFiGAN, keep: list[int]) -> list[Tensor]:
    """The kept indices of the input conv's output (entry 0) and of each stage's stream (1 ...)."""
    # ConvTranspose1d weights are (in, out, k); Conv1d weights are (out, in, k)
    ups: list[Any] = list(teacher.ups)
    score = _share(teacher.conv_pre.weight, 0) + _share(ups[0].weight, 0)
    chosen = [_top(score, keep[0])]
    for i, up in enumerate(ups):
        score = _share(up.weight, 1)
        for block in _stage_blocks(teacher, i):
            for c1, c2 in zip(block.convs1, block.convs2):
                score = score + _share(c1.weight, 1) + _share(c2.weight, 0)
        reader = ups[i + 1].weight if i + 1 < len(ups) else teacher.conv_post.weight
        score = score + _share(reader, 0 if i + 1 < len(ups) else 1)
        chosen.append(_top(score, keep[i + 1]))
    return chosen


def _cut(conv: Any, out_idx: Tensor | None, in_idx: Tensor | None, transposed: bool = False) -> dict:
    w = conv.weight.detach()
    o_dim, i_dim = (1, 0) if transposed else (0, 1)
    if out_idx is not None:
        w = w.index_select(o_dim, out_idx)
    if in_idx is not None:
        w = w.index_select(i_dim, in_idx)
    b = conv.bias.detach()
    return {"weight": w.clone(), "bias": (b if out_idx is None else b[out_idx]).clone()}


def prune_teacher(teacher: HiFiGAN, channels: int) -> HiFiGAN:
    """The teacher narrowed to ``channels`` (its layout, stage widths ``channels // 2**(i+1)``)."""
    full = teacher.conv_pre.out_channels
    if not 0 < channels <= full or channels % 2 ** len(teacher.ups):
        raise ValueError(f"channels must be in (0, {full}] and divisible by {2 ** len(teacher.ups)}, got {channels}")
    ups: list[Any] = list(teacher.ups)
    rates = tuple(up.stride[0] for up in ups)
    kernels = tuple(up.kernel_size[0] for up in ups)
    rb_kernels = tuple(b.convs2[0].kernel_size[0] for b in _stage_blocks(teacher, 0))
    student = HiFiGAN(rates, kernels, channels, rb_kernels)
    keep = [channels // 2**i for i in range(len(teacher.ups) + 1)]
    streams = _stream_indices(teacher, keep)
    state: dict[str, Tensor] = {}

    def put(prefix: str, part: dict) -> None:
        state.update({f"{prefix}.{k}": v for k, v in part.items()})

    put("conv_pre", _cut(teacher.conv_pre, streams[0], None))
    for i, up in enumerate(ups):
        put(f"ups.{i}", _cut(up, streams[i + 1], streams[i], transposed=True))
        for b, block in enumerate(_stage_blocks(teacher, i)):
            name = f"resblocks.{i * teacher.num_kernels + b}"
            for j, (c1, c2) in enumerate(zip(block.convs1, block.convs2)):
                inner = _inner_indices(c1, c2, keep[i + 1])
                put(f"{name}.convs1.{j}", _cut(c1, inner, streams[i + 1]))
                put(f"{name}.convs2.{j}", _cut(c2, streams[i + 1], inner))
    put("conv_post", _cut(teacher.conv_post, None, streams[-1]))
    student.load_state_dict(state, strict=True)
    return student


# ----- least-squares refit: each conv re-solved so the student's stream tracks the teacher's ------------
def _patches(x: Tensor, conv: Any) -> Tensor:
    """(N, C, T) -> (N * T, C * k): the inputs each output sample of ``conv`` sees (its im2col)."""
    (k,), (d,), (p,) = conv.kernel_size, conv.dilation, conv.padding
    cols = torch.nn.functional.pad(x, (p, p)).unfold(2, (k - 1) * d + 1, 1)[..., ::d]  # (N, C, T, k)
    return cols.permute(0, 2, 1, 3).reshape(-1, x.shape[1] * k)


@torch.no_grad()
def _solve(conv: Any, x: Tensor, target: Tensor, rows: int, ridge: float, gen: torch.Generator) -> None:
    """Set ``conv``'s weight and bias to the ridge least-squares fit of ``target`` from input ``x``."""
    a = _patches(x, conv)
    y = target.permute(0, 2, 1).reshape(-1, target.shape[1])
    if a.shape[0] > rows:
        pick = torch.randperm(a.shape[0], generator=gen)[:rows]
        a, y = a[pick], y[pick]
    a = torch.cat([a, torch.ones_like(a[:, :1])], dim=1).double()
    gram = a.T @ a
    gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
    sol = torch.linalg.solve(gram, a.T @ y.double()).float()  # (C * k + 1, out)
    conv.weight.copy_(sol[:-1].T.reshape(conv.weight.shape))
    conv.bias.copy_(sol[-1])


@torch.no_grad()
def refit(student: HiFiGAN, teacher: HiFiGAN, mel: Tensor, rows: int = 20_000, ridge: float = 1e-3) -> HiFiGAN:
    """Re-solve the student's ResBlock convs and output conv, stage by stage, on ``mel``.

    Each conv is fitted by ridge least squares from the *student's* inputs (so the error of the
    layers before it is corrected, not compounded) to the teacher's values on the kept channels:
    an inner conv to the teacher's inner activations, a ResBlock's second conv to what the
    teacher's stream becomes minus what the student's stream already is, the output conv to the
    teacher's pre-tanh output. The up-sampling convs keep their pruned weights.
    """
    from soundvcm.encoders.hifigan import SLOPE

    act = torch.nn.functional.leaky_relu
    gen = torch.Generator().manual_seed(0)
    keep = [student.conv_pre.out_channels // 2**i for i in range(len(student.ups) + 1)]
    streams = _stream_indices(teacher, keep)
    xt, xs = teacher.conv_pre(mel), student.conv_pre(mel)
    ups_t: list[Any] = list(teacher.ups)
    ups_s: list[Any] = list(student.ups)
    for i, (up_t, up_s) in enumerate(zip(ups_t, ups_s)):
        xt, xs = up_t(act(xt, SLOPE)), up_s(act(xs, SLOPE))
        kept = streams[i + 1]
        outs_t, outs_s = [], []
        for bt, bs in zip(_stage_blocks(teacher, i), _stage_blocks(student, i)):
            yt, ys = xt, xs
            for c1t, c2t, c1s, c2s in zip(bt.convs1, bt.convs2, bs.convs1, bs.convs2):
                ht = c1t(act(yt, SLOPE))
                inner = _inner_indices(c1t, c2t, c1s.out_channels)
                _solve(c1s, act(ys, SLOPE), ht[:, inner], rows, ridge, gen)
                hs = c1s(act(ys, SLOPE))
                yt_next = yt + c2t(act(ht, SLOPE))
                _solve(c2s, act(hs, SLOPE), yt_next[:, kept] - ys, rows, ridge, gen)
                yt, ys = yt_next, ys + c2s(act(hs, SLOPE))
            outs_t.append(yt)
            outs_s.append(ys)
        xt, xs = sum(outs_t) / len(outs_t), sum(outs_s) / len(outs_s)
    # the output conv sees PyTorch's default slope 0.01, as in HiFiGAN.forward
    _solve(student.conv_post, act(xs), teacher.conv_post(act(xt)), rows, ridge, gen)
    return student
