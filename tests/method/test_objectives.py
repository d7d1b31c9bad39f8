"""Objectives pinned by known answers: the VCM target on exact flows, its limits and clamps,
guidance placement, the MeanFlow identity, and reproducibility."""

import math

import pytest
import torch
from torch import nn

from soundvcm.conditions import ConditionDropout
from soundvcm.network.protocol import VelocityNet
from soundvcm.objectives import (
    OBJECTIVE_PRESETS,
    Batch,
    FlowMatching,
    MeanFlow,
    MeanFlowConfig,
    TimeSampling,
    TrainingGuidance,
    VelocityConsistency,
    VelocityConsistencyConfig,
    build_objective,
    intermediate_time,
    lambda_schedule,
)


def _points(flow, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % flow.spec.num_classes
    t = 0.35 + 0.6 * torch.rand(n, generator=g, dtype=torch.float64)
    s = t * torch.rand(n, generator=g, dtype=torch.float64) * 0.8
    x0 = flow.sample_data(labels, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
    return x_t, t, s, labels


def test_vcm_residual_on_exact_flow_shrinks_with_lambda(flow, guidance, exact):
    """With the exact marginal velocity for v and u_theta = exact u, Eq. 10's target differs
    from u(x_t, t, s) by O((l - t)(l - t + lambda)) (Eq. 9): quadratic in lambda."""
    x_t, t, s, labels = _points(flow)
    prepared = exact.prepare(exact.one_hot(labels))
    v = flow.guided_velocity(x_t, t, labels, guidance)
    u_true = flow.average_velocity(x_t, t, s, labels, guidance)
    objective = VelocityConsistency(VelocityConsistencyConfig())
    residuals = []
    for lam in (0.2, 0.1, 0.05, 0.025):
        target = objective.targets(exact, x_t, t, s, v, prepared, lam)
        residuals.append((target - u_true).square().mean().sqrt().item())
    assert all(a > b for a, b in zip(residuals, residuals[1:])), residuals
    for a, b in zip(residuals, residuals[1:]):
        assert a / b > 3.0, residuals  # halving lambda divides the error by ~4
    assert residuals[-1] < 2e-3


def test_one_consistency_step_with_exact_u_is_exact(flow, guidance, exact):
    from soundvcm.sampling import ConsistencyOptions, consistency_sample

    labels = torch.tensor([0, 1, 2, 2, 1])
    noise = torch.randn(5, 3, dtype=torch.float64)
    prepared = exact.prepare(exact.one_hot(labels))
    endpoint = flow.integrate(noise, 1.0, 0.0, labels, guidance, steps=512)
    for steps in (1, 3):
        out = consistency_sample(exact, noise, prepared, ConsistencyOptions(steps=steps))
        torch.testing.assert_close(out.double(), endpoint, atol=1e-5, rtol=0)
    out = consistency_sample(exact, noise, prepared, ConsistencyOptions(times=(1.0, 0.93, 0.5, 0.0)))
    torch.testing.assert_close(out.double(), endpoint, atol=1e-5, rtol=0)


class _Spy(VelocityNet):
    """Returns +1 on conditional rows and -1 on null rows, and counts calls."""

    condition_groups = {"class": ("class",)}

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.null = nn.Parameter(torch.zeros(2))

    def null_conditions(self, b):
        return {"class": self.null[None].expand(b, -1)}

    def prepare(self, c):
        return {"flag": torch.where(c["class"].sum(-1) == 0, -1.0, 1.0)}

    def forward(self, x, t, s, prepared):
        self.calls += 1
        return prepared["flag"][:, None].expand_as(x).float()


def test_t_equals_s_target_is_flow_matching_target():
    spy = _Spy()
    objective = VelocityConsistency(VelocityConsistencyConfig())
    x_t, v = torch.randn(6, 2), torch.randn(6, 2)
    t = torch.rand(6)
    target = objective.targets(spy, x_t, t, t.clone(), v, {"flag": torch.ones(6)}, lam=0.1)
    assert torch.equal(target, v)  # lambda = 1 at t = s: the flow-matching target
    assert spy.calls == 0  # no bootstrap pass is spent on t = s rows


def test_guidance_only_inside_window_and_never_on_null_rows():
    m, w = 0.25, 4.0
    guide = TrainingGuidance(scale=w, t_max=0.8, mix=m)
    spy = _Spy()
    t = torch.tensor([0.1, 0.5, 0.8, 0.81, 0.95, 0.3, 0.9])
    is_null = torch.tensor([False, False, False, False, False, True, True])
    v_t = torch.randn(7, 2)
    ones = torch.ones(7)
    v_mix = guide.mixed_velocity(spy, torch.randn(7, 2), t, v_t, {"flag": ones}, {"flag": -ones}, is_null)
    v_guided, v_uncond = 1.0, -1.0
    inside = m * (w * v_t[:3] + (1 - w) * v_uncond) + (1 - m) * v_guided  # Eq. 16
    outside = m * v_t[3:5] + (1 - m) * v_guided  # w = 1 above t_max
    torch.testing.assert_close(v_mix[:3], inside)
    torch.testing.assert_close(v_mix[3:5], outside)
    torch.testing.assert_close(v_mix[5:], v_t[5:])  # null rows: eps - x0, no guidance
    assert torch.equal(guide.row_scales(t, is_null), torch.tensor([w, w, w, 1, 1, 1, 1]))


def test_baked_prompt_guidance_adds_the_captions_part_inside_the_window_only():
    """+ g (v_guided - v_uncaptioned) on conditional rows with t <= t_max; the rest as Eq. 16."""
    m, w, g = 0.25, 4.0, 0.15
    guide = TrainingGuidance(scale=w, t_max=0.8, mix=m, prompt_scale=g)
    spy = _Spy()
    t = torch.tensor([0.1, 0.5, 0.95, 0.3])
    is_null = torch.tensor([False, False, False, True])
    v_t, ones = torch.randn(4, 2), torch.ones(4)
    v_mix = guide.mixed_velocity(
        spy, torch.randn(4, 2), t, v_t, {"flag": ones}, {"flag": -ones}, is_null, {"flag": 0.5 * ones}
    )
    v_guided, v_uncond, v_uncaptioned = 1.0, -1.0, 0.5
    inside = m * (w * v_t[:2] + (1 - w) * v_uncond) + (1 - m) * v_guided + g * (v_guided - v_uncaptioned)
    torch.testing.assert_close(v_mix[:2], inside)
    torch.testing.assert_close(v_mix[2], m * v_t[2] + (1 - m) * v_guided)  # above t_max: none
    torch.testing.assert_close(v_mix[3], v_t[3])  # a null row: eps - x0
    assert spy.calls == 1  # still one batched pass
    # without the uncaptioned conditions (a network with no text group) it is Eq. 16 alone
    plain = TrainingGuidance(scale=w, t_max=0.8, mix=m)
    reference = plain.mixed_velocity(spy, torch.randn(4, 2), t, v_t, {"flag": ones}, {"flag": -ones}, is_null)
    no_text = guide.mixed_velocity(spy, torch.randn(4, 2), t, v_t, {"flag": ones}, {"flag": -ones}, is_null)
    torch.testing.assert_close(no_text, reference)
    with pytest.raises(ValueError, match="prompt_scale must lie in"):
        TrainingGuidance(mix=0.25, prompt_scale=0.25)  # no fixed point: the caption's effect would grow without bound


class _TwoGroups(VelocityNet):
    """u = gain (video + 10 caption), per row (features are one number each), ignoring x, t, s; its
    null features are ``null`` (video) and 0 (caption)."""

    condition_groups = {"video": ("video",), "text": ("text",)}

    def __init__(self, gain: float = 1.0, null: float = 0.0):
        super().__init__()
        self.calls, self.gain, self.null = 0, gain, null
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so it trains as a student too

    def null_conditions(self, b):
        return {"video": torch.full((b, 1), self.null), "text": torch.zeros(b, 1)}

    def prepare(self, c):
        return {"u": c["video"][:, 0] + 10 * c["text"][:, 0]}

    def forward(self, x, t, s, prepared):
        self.calls += 1
        return self.gain * self.scale * prepared["u"][:, None].expand_as(x).float()


def test_guided_teacher_velocity_is_cfg_around_prompt_guidance():
    """v_T = w (v_c + G (v_c - v_uncaptioned)) + (1 - w) v_null on conditional rows; v_null on null rows;
    one batched pass of the teacher; the dropped groups get the teacher's own null features (here
    -1 for the video where the student's are 0)."""
    from soundvcm.objectives.guidance import TeacherGuidance, teacher_velocity

    teacher, w, g = _TwoGroups(null=-1.0), 4.5, 4.0
    video, text = torch.tensor([[1.0], [2.0], [5.0], [3.0]]), torch.tensor([[0.5], [0.0], [2.0], [1.0]])
    is_null = torch.tensor([False, False, True, False])  # row 2 dropped by the student: its nulls are 0
    conditions = {"video": video, "text": text}
    dropped = {"video": torch.where(is_null[:, None], 0.0, video), "text": torch.where(is_null[:, None], 0.0, text)}
    x, t = torch.randn(4, 3), torch.rand(4)
    v = teacher_velocity((teacher, None), x, t, conditions, dropped, is_null, TeacherGuidance("m", w, g))
    v_c, v_uncaptioned, v_null = video[:, 0] + 10 * text[:, 0], video[:, 0], torch.full((4,), -1.0)
    expected = w * (v_c + g * (v_c - v_uncaptioned)) + (1 - w) * v_null
    torch.testing.assert_close(v[:, 0], torch.where(is_null, v_null, expected))
    assert teacher.calls == 1
    spec = TeacherGuidance("m", 1.0, 0.0)
    plain = teacher_velocity((teacher, None), x, t, conditions, dropped, is_null, spec)
    torch.testing.assert_close(plain[:, 0], torch.where(is_null, v_null, v_c))  # w = 1, G = 0: v_c
    with pytest.raises(ValueError, match="cfg_scale"):
        TeacherGuidance("m", cfg_scale=0.5)


def test_a_second_teacher_takes_the_rows_without_a_caption():
    """uncaptioned_source: rows whose caption was dropped (or that have none) and null rows take the
    second teacher's CFG field (no prompt guidance); captioned rows the first's guided field."""
    from soundvcm.objectives.guidance import TeacherGuidance, teacher_velocity

    main, second, w, g = _TwoGroups(), _TwoGroups(gain=3.0), 2.0, 1.0
    video = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    text = torch.tensor([[1.0], [1.0], [0.0], [1.0]])  # row 2 has no caption
    is_null = torch.tensor([False, False, False, True])
    dropped = {"video": torch.where(is_null[:, None], 0.0, video), "text": text.clone()}
    dropped["text"][1] = 0.0  # row 1's caption dropped alone
    dropped["text"][3] = 0.0
    x, t = torch.randn(4, 2), torch.rand(4)
    spec = TeacherGuidance("m", w, g, uncaptioned_source="u")
    v = teacher_velocity((main, second), x, t, {"video": video, "text": text}, dropped, is_null, spec)
    v_c0 = 1.0 + 10.0
    assert v[0, 0].item() == pytest.approx(w * (v_c0 + g * (v_c0 - 1.0)))  # the first teacher, guided
    assert v[1, 0].item() == pytest.approx(w * 3.0 * 2.0)  # the second: w * v_c(video, no caption), v_null = 0
    assert v[2, 0].item() == pytest.approx(w * 3.0 * 3.0)
    assert v[3, 0].item() == 0.0  # a null row: the second teacher's v_null


def test_vcm_with_a_teacher_regresses_onto_its_velocity():
    """On t = s rows the target is the teacher's velocity: a student equal to an unguided teacher has
    zero loss, and a guided one (w = 2) a known one; an unloaded teacher is refused."""
    from dataclasses import replace as dc_replace

    from soundvcm.objectives.guidance import TeacherGuidance

    base = VelocityConsistencyConfig(time=TimeSampling(equal_ratio=1.0), adaptive_p=0.0)
    base = dc_replace(base, guidance=dc_replace(base.guidance, dropout=ConditionDropout(row_prob=0.0)))
    batch = Batch(torch.randn(3, 4), {"video": torch.tensor([[1.0], [2.0], [3.0]]), "text": torch.ones(3, 1)})
    student = _TwoGroups()
    loss = VelocityConsistency(dc_replace(base, teacher=TeacherGuidance("m", 1.0, 0.0)))
    with pytest.raises(RuntimeError, match="no teacher was loaded"):
        loss.loss(student, batch, 0)
    loss.teacher = _TwoGroups()
    assert loss.loss(student, batch, 0).loss.item() == 0.0
    guided = VelocityConsistency(dc_replace(base, teacher=TeacherGuidance("m", 2.0, 0.0)))
    guided.teacher = _TwoGroups()
    u = batch.conditions["video"][:, 0] + 10  # the student's v_c; the teacher's 2 v_c - v_null = 2 v_c
    assert guided.loss(student, batch, 0).loss.item() == pytest.approx(u.square().mean().item())


def test_lambda_schedule_endpoints():
    assert lambda_schedule(0, 1000, 0.1, 0.002) == pytest.approx(0.1)
    assert lambda_schedule(1000, 1000, 0.1, 0.002) == pytest.approx(0.002)
    assert lambda_schedule(500, 1000, 0.1, 0.002) == pytest.approx(math.sqrt(0.1 * 0.002))
    assert lambda_schedule(5000, 1000, 0.1, 0.002) == pytest.approx(0.002)  # clipped past the end
    with pytest.raises(ValueError):
        VelocityConsistencyConfig(lambda_init=0.001, lambda_end=0.1)


def test_intermediate_time_clamps():
    t = torch.tensor([0.9, 0.5, 0.30005, 0.2])
    s = torch.tensor([0.1, 0.4999, 0.3, 0.0])
    l, lam = intermediate_time(t, s, 0.002, 1e-4)
    regular = s <= t - 1e-4  # what time sampling guarantees; row 2 is a shorter interval
    assert torch.all(l[regular] <= t[regular] - 1e-4 + 1e-7) and torch.all(l >= s)
    torch.testing.assert_close(lam, (t - l) / (t - s))  # Eq. 7's lambda for the clamped l
    assert l[0] == pytest.approx(0.9 - 0.8 * 0.002)  # Eq. 13 where the clamp is inactive
    assert l[1] == pytest.approx(0.5 - 1e-4)  # clamped to t - 1e-4
    assert l[2] == pytest.approx(0.3) and lam[2] == pytest.approx(1.0)  # never past s: lambda = 1
    assert torch.all((lam > 0) & (lam <= 1))


def test_time_sampling_layout_and_distribution():
    ts = TimeSampling()
    g = torch.Generator().manual_seed(0)
    t, s = ts.sample(40_000, g)
    n_eq = ts.num_equal(40_000)
    assert n_eq == 30_000
    assert torch.equal(t[:n_eq], s[:n_eq])
    assert torch.all(s[n_eq:] <= t[n_eq:] - 1e-4 + 1e-7) and torch.all(s >= 0) and torch.all(t < 1)
    logit = torch.logit(t[:n_eq].double())
    assert abs(logit.mean().item() + 0.4) < 0.03 and abs(logit.std().item() - 1.0) < 0.03
    # for s < t rows, t is the max of two draws: P(t < 0.4) = Phi((logit 0.4 + 0.4))^2
    p = torch.distributions.Normal(0.0, 1.0).cdf(torch.tensor(math.log(0.4 / 0.6) + 0.4)).item() ** 2
    assert abs((t[n_eq:] < 0.4).float().mean().item() - p) < 0.015


def test_condition_dropout_rates_and_null_rows():
    null = {"a": torch.zeros(20_000, 1), "b": torch.zeros(20_000, 1)}
    cond = {"a": torch.ones(20_000, 1), "b": torch.ones(20_000, 1)}
    groups = {"video": ("a",), "text": ("b",)}
    g = torch.Generator().manual_seed(0)
    out, is_null = ConditionDropout(row_prob=0.0, group_prob=0.1).apply(cond, null, groups, g)
    assert abs((out["a"] == 0).float().mean().item() - 0.1) < 0.01
    assert abs(is_null.float().mean().item() - 0.01) < 0.004  # independent groups: both dropped
    out, is_null = ConditionDropout(row_prob=0.1).apply(cond, null, groups, g)
    assert torch.equal(out["a"][:, 0] == 0, is_null) and torch.equal(out["b"][:, 0] == 0, is_null)
    with pytest.raises(ValueError):
        ConditionDropout(row_prob=1.5)


def test_kept_groups_are_dropped_only_with_the_whole_row():
    """Batch.kept: a kept row never loses its caption alone, but still goes fully null with the row;
    the other rows and the random stream are as without it."""
    n = 20_000
    null = {"a": torch.zeros(n, 1), "b": torch.zeros(n, 1)}
    cond = {"a": torch.ones(n, 1), "b": torch.ones(n, 1)}
    groups = {"video": ("a",), "text": ("b",)}
    kept = {"text": torch.arange(n) % 2 == 0}
    dropout = ConditionDropout(row_prob=0.1, group_prob=0.2)
    out, is_null = dropout.apply(cond, null, groups, torch.Generator().manual_seed(0), kept)
    ref, ref_null = dropout.apply(cond, null, groups, torch.Generator().manual_seed(0))
    text_dropped, video_dropped = out["b"][:, 0] == 0, out["a"][:, 0] == 0
    assert torch.equal(text_dropped[kept["text"]], is_null[kept["text"]])  # only with the whole row
    assert abs(is_null[kept["text"]].float().mean().item() - 0.1) < 0.012  # which still drops at 0.1
    assert torch.equal(out["b"][~kept["text"]], ref["b"][~kept["text"]])  # the others unchanged
    assert torch.equal(video_dropped, ref["a"][:, 0] == 0)  # the video group untouched
    assert (ref["b"][kept["text"], 0] == 0).float().mean().item() > 0.25  # without it: 0.1 + 0.9 * 0.2


def test_meanflow_identity_on_exact_flow(flow, guidance, exact):
    """u = v - (t - s) du/dt holds for the exact average velocity, via the same JVP MeanFlow uses."""
    x_t, t, s, labels = _points(flow, n=6)
    prepared = exact.prepare(exact.one_hot(labels))
    v = flow.guided_velocity(x_t, t, labels, guidance)
    u, dudt = torch.func.jvp(lambda z, tt: exact(z, tt, s, prepared), (x_t, t), (v, torch.ones_like(t)))
    torch.testing.assert_close(v - (t - s)[:, None] * dudt, u, atol=1e-5, rtol=0)


class _AttentionNet(VelocityNet):
    """A tiny attention network, to run the MeanFlow JVP through SDPA on CPU."""

    condition_groups = {"class": ("class",)}

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(1, 8)
        self.qkv = nn.Linear(8, 24)
        self.out = nn.Linear(8, 1)
        self.null = nn.Parameter(torch.zeros(2))
        self.cond = nn.Linear(2, 8)

    def null_conditions(self, b):
        return {"class": self.null[None].expand(b, -1)}

    def prepare(self, c):
        return {"c": self.cond(c["class"])}

    def forward(self, x, t, s, prepared):
        h = self.inp(x[..., None]) + prepared["c"][:, None] + (t - s)[:, None, None] + t[:, None, None]
        q, k, v = self.qkv(h).chunk(3, -1)
        h = nn.functional.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return self.out(h)[..., 0]


@pytest.mark.parametrize("name", ["fm", "vcm", "meanflow"])
def test_objectives_train_and_reproduce(name):
    """Each objective gives a finite loss with gradients on an attention network, and the same
    seeds give the same losses."""

    def run():
        torch.manual_seed(0)
        net = _AttentionNet()
        opt = torch.optim.SGD(net.parameters(), lr=1e-2)
        objective = build_objective(name, total_steps=10)
        g = torch.Generator().manual_seed(1)
        losses = []
        for step in range(3):
            labels = torch.randint(0, 2, (32,), generator=g)
            batch = Batch(torch.randn(32, 5, generator=g), {"class": nn.functional.one_hot(labels, 2).float()})
            out = objective.loss(net, batch, step, g)
            opt.zero_grad()
            out.loss.backward()
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
            opt.step()
            losses.append(out.loss.item())
        return losses

    first, second = run(), run()
    assert all(math.isfinite(v) for v in first)
    assert first == second


def test_presets_and_defaults():
    vcm = OBJECTIVE_PRESETS["vcm"].config
    assert vcm.guidance.mix == 0.25 and OBJECTIVE_PRESETS["vcm_sec43"].config.guidance.mix == 0.75
    assert (vcm.time.equal_ratio, vcm.time.mean, vcm.time.std, vcm.time.min_gap) == (0.75, -0.4, 1.0, 1e-4)
    assert (vcm.lambda_init, vcm.lambda_end, vcm.adaptive_p, vcm.adaptive_eps) == (0.1, 0.002, 1.0, 0.01)
    assert (vcm.guidance.scale, vcm.guidance.t_max, vcm.guidance.dropout.row_prob) == (4.0, 0.8, 0.1)
    assert isinstance(build_objective("fm", 1), FlowMatching)
    assert isinstance(build_objective("meanflow", 1, MeanFlowConfig(adaptive_p=0.5)), MeanFlow)
    with pytest.raises(ValueError, match="unknown objective"):
        build_objective("nope", 1)


def test_adaptive_weight_shrinks_large_errors():
    from soundvcm.objectives import adaptive_weight

    mse = torch.tensor([0.0, 1.0, 9.0], requires_grad=True)
    w = adaptive_weight(mse, p=1.0, eps=0.01)
    torch.testing.assert_close(w, 1 / (mse.detach() + 0.01))
    assert not w.requires_grad  # stop-gradient (Alg. 1 line 9)
    torch.testing.assert_close(adaptive_weight(mse, 0.0, 0.01), torch.ones(3))


@pytest.mark.parametrize("name", ["vcm_split_p", "meanflow_split_p"])
def test_split_p_weights_t_equal_s_rows_without_the_adaptive_weight(name):
    """vcm_split_p (issue 11): p = 0 on t = s rows, the paper's p = 1 on s < t rows; the paper's own
    preset keeps one p on every row."""
    from soundvcm.network.toy import ToyNetConfig, ToyVelocityNet
    from soundvcm.objectives import Batch

    config = OBJECTIVE_PRESETS[name].config
    assert config.adaptive_p == 1.0 and config.adaptive_p_equal == 0.0
    assert OBJECTIVE_PRESETS["vcm"].config.adaptive_p_equal is None  # the paper: Alg. 1 line 9 on all rows
    torch.manual_seed(0)
    net = ToyVelocityNet(ToyNetConfig(dim=3, num_classes=2, width=16, depth=1))
    g = torch.Generator().manual_seed(3)
    batch = Batch(torch.randn(16, 3, generator=g), net.one_hot(torch.randint(0, 2, (16,), generator=g)))
    out = build_objective(name, 100).loss(net, batch, 0, torch.Generator().manual_seed(4))
    equal = out.t == out.s
    assert 0 < equal.sum() < 16
    w = torch.where(equal, torch.ones_like(out.mse), 1 / (out.mse + 0.01))
    torch.testing.assert_close(out.loss, (w * out.mse).mean())
    paper = build_objective(name.removesuffix("_split_p"), 100).loss(net, batch, 0, torch.Generator().manual_seed(4))
    torch.testing.assert_close(paper.loss, (paper.mse / (paper.mse + 0.01)).mean())


def test_loud_frame_weights_favour_events_and_keep_the_loss_scale():
    """Issue 33's candidate: a clip's loud frames weigh more; rows keep mean 1; strength 0 is plain MSE."""
    from soundvcm.objectives.base import loud_frame_weights, per_row_mse

    x0 = torch.zeros(3, 12, 4)
    x0[0, 5] = 4.0  # one loud frame over a flat bed
    x0[1] = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    w = loud_frame_weights(x0, 1.0)
    assert torch.allclose(w.mean(dim=1), torch.ones(3)) and (w > 0).all()
    assert int(w[0].argmax()) == 5 and float(w[0, 5]) > 2 * float(w[0, 0])
    assert torch.allclose(w[2], torch.ones(12))  # a constant row: nothing is louder
    assert torch.allclose(loud_frame_weights(x0, 0.0), torch.ones(3, 12))
    pred, target = torch.randn(3, 12, 4), torch.randn(3, 12, 4)
    assert torch.allclose(per_row_mse(pred, target, torch.ones(3, 12)), per_row_mse(pred, target))
    only_loud = torch.zeros(3, 12)
    only_loud[:, 5] = 12.0
    expected = (pred[:, 5] - target[:, 5]).square().mean(dim=-1)
    assert torch.allclose(per_row_mse(pred, target, only_loud), expected)


def test_an_objective_is_chosen_by_its_configs_type_and_gives_it_back():
    from soundvcm.objectives import OBJECTIVE_PRESETS, build_objective, config_of, objective_for

    for name in ("fm", "vcm", "meanflow"):
        config = OBJECTIVE_PRESETS[name].config
        objective = objective_for(config, 10)
        assert config_of(objective) == config and type(objective) is type(build_objective(name, 10))
    with pytest.raises(TypeError, match="not an ObjectiveConfig"):
        config_of(type("Odd", (), {"config": object()})())


def test_uncaptioned_branch_keeps_the_video_and_nulls_the_caption():
    """prepare_guidance's third branch: the dropped conditions with every caption replaced by the
    network's null text, the video untouched (a real MMDiT's condition groups)."""
    from soundvcm.conditions import without_captions
    from soundvcm.network.mmdit import MMDiT
    from soundvcm.objectives.guidance import prepare_guidance
    from soundvcm.spec import preset_for_encoders

    torch.manual_seed(0)
    net = MMDiT(preset_for_encoders("debug", "lite")[0]).eval()
    null = net.null_conditions(3)
    conditions = {k: v + torch.randn_like(v) for k, v in null.items()}
    blank = without_captions(conditions, net)
    assert torch.equal(blank["text"], null["text"]) and not torch.equal(conditions["text"], null["text"])
    assert all(torch.equal(blank[k], conditions[k]) for k in net.condition_groups["video"])
    keep = ConditionDropout(row_prob=0.0)
    prepared, _, _, uncaptioned, _ = prepare_guidance(net, conditions, None, keep, uncaptioned=True)
    expected = net.prepare(blank)
    assert uncaptioned is not None and all(torch.equal(uncaptioned[k], expected[k]) for k in expected)
    assert prepare_guidance(net, conditions, None, keep)[3] is None  # not asked for: not built
