"""The run spec (ModelSpec) and the one sampling entry point: saved, read, obeyed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from media_factory import make_video
from soundvcm.cli import main
from soundvcm.network.checkpoint import read_checkpoint_config, save_network
from soundvcm.network.mmdit import MMDiT
from soundvcm.pipeline import Pipeline
from soundvcm.sampling import (
    ClassifierFreeGuided,
    ConsistencyOptions,
    EulerOptions,
    NegativeGuided,
    PromptGuided,
    consistency_sample,
    euler_sample,
    options_for,
    options_from_dict,
    sample,
)
from soundvcm.spec import ModelSpec, legacy_spec, preset_for_encoders, read_spec


class _Linear(torch.nn.Module):
    """u(x, t, s | c) = x - c: one jump from t = 1 to 0 lands on c (x_0 = x_1 - u, Alg. 2)."""

    def forward(self, x, t, s, prepared):
        return x - prepared["c"]


def test_spec_round_trips_and_picks_the_sampler():
    vcm = ModelSpec.create("lite_small", "lite", "vcm")
    assert ModelSpec.from_dict(json.loads(json.dumps(vcm.to_dict()))) == vcm
    assert vcm.sampler == ConsistencyOptions(1) and vcm.objective_config.guidance.mix == 0.25  # typed, rebuilt
    assert vcm.duration == 4.0 and vcm.network_config.sequence.sync_layout == "segments"
    fm = ModelSpec.create("lite_small", "lite", "fm")
    assert fm.sampler.kind == "euler" and fm.sampler.steps == 25 and fm.sampler.cfg_scale == 4.5
    assert ModelSpec.create("debug", "lite", "meanflow_split_p").sampler.kind == "consistency"
    assert "autocast_dtype" not in vcm.to_dict()["objective_config"]  # precision is not a hyperparameter


def test_legacy_checkpoints_get_their_spec_from_fields_not_guesses():
    base = {"network": {"latent_dim": 40}, "provenance": {"kind": "converted", "variant": "small_16k"}}
    # a converted MMAudio network from before specs: the family only, the preset names the set
    assert legacy_spec({**base, "encoder_set": "mmaudio", "preset": "small_16k"}).encoder_set == "mmaudio_16k"
    assert legacy_spec({**base, "encoder_set": "mmaudio", "preset": None}).encoder_set == "mmaudio_16k"
    assert legacy_spec({**base, "encoder_set": "mmaudio", "provenance": {"kind": "converted"}}).encoder_set == (
        "mmaudio_44k"  # nothing names it: the latent width is the last resort (legacy files only)
    )
    assert legacy_spec({**base, "encoder_set": "mmaudio"}).sampler.kind == "euler"  # converted: flow matching
    assert legacy_spec({"encoder_set": "lite", "objective": "vcm", "network": {}}).sampler.kind == "consistency"


def test_convert_writes_the_spec_once(tmp_path):
    from mmaudio_fixture import mmaudio_pth as _mmaudio_pth

    pth, _ = _mmaudio_pth(tmp_path, "v1")
    assert main(["convert", "mmaudio", str(pth), str(tmp_path / "conv"), "--variant", "debug"]) == 0
    doc = read_checkpoint_config(tmp_path / "conv")
    assert doc["spec"]["objective"] == "fm" and doc["spec"]["network"] == "debug"
    assert read_spec(tmp_path / "conv").sampler.kind == "euler"


def test_model_init_saves_a_spec(tmp_path):
    assert main(["model", "init", "--preset", "lite_small", "--objective", "fm", "--out", str(tmp_path / "m")]) == 0
    spec = read_spec(tmp_path / "m")
    assert (spec.network, spec.encoder_set, spec.objective, spec.sampler.kind) == ("lite_small", "lite", "fm", "euler")


def test_the_pipeline_samples_as_the_spec_says(tmp_path):
    """The objective says VCM, the spec says Euler at 3 steps without CFG: the spec wins."""
    config, encoder_set = preset_for_encoders("debug", "lite")
    spec = ModelSpec.create("debug", encoder_set, "vcm")
    spec = replace(spec, sampler=EulerOptions(steps=3, cfg_scale=1.0))
    save_network(tmp_path / "m", MMDiT(config), preset="debug", encoder_set=encoder_set, objective="vcm",
                 spec=spec.to_dict())  # fmt: skip
    pipe = Pipeline.load(tmp_path / "m", pretrained_encoders=False)
    video = make_video(tmp_path / "v.mp4", duration=1.5, size=(64, 48))
    assert pipe.default_sampler() == "euler"
    assert pipe.generate(video=video, duration=1.0).nfe == 3  # 3 steps, no CFG pass
    assert pipe.generate(video=video, duration=1.0, options=pipe.sampler(cfg_scale=2.0)).nfe == 6
    assert pipe.generate(video=video, duration=1.0, options=pipe.sampler("consistency")).nfe == 1
    # the guidance window: at t = 1, 2/3, 1/3 only the last step is guided when t_max = 0.5
    assert pipe.generate(video=video, duration=1.0, options=pipe.sampler(cfg_scale=2.0, guidance_t_max=0.5)).nfe == 4
    with pytest.raises(ValueError, match="steps must be >= 1"):
        pipe.sampler(steps=0)
    assert pipe.generate(video=video).duration == 1.0  # the default length is the model's own (debug: 1 s)


def test_one_entry_point_dispatches_to_both_samplers():
    torch.manual_seed(0)
    noise = torch.randn(3, 4)
    cond, null = {"c": torch.ones(3, 4)}, {"c": torch.zeros(3, 4)}
    net = _Linear()
    out = sample(net, noise, cond, ConsistencyOptions(2))
    assert torch.equal(out, consistency_sample(net, noise, cond, ConsistencyOptions(2)))
    euler = EulerOptions(5, cfg_scale=3.0, guidance_t_max=0.6)
    out = sample(net, noise, cond, euler, null)
    assert torch.equal(out, euler_sample(ClassifierFreeGuided(net, null, 3.0, 0.6), noise, cond, euler))
    # a negative prompt on a consistency model: (1 + g) u(c) - g u(neg) per step
    out = sample(net, noise, cond, ConsistencyOptions(1, negative_scale=0.5), null)
    assert torch.equal(out, consistency_sample(NegativeGuided(net, null, 0.5), noise, cond, ConsistencyOptions(1)))
    torch.testing.assert_close(out, torch.full_like(out, 1.5))  # one jump to the guided endpoint
    assert ConsistencyOptions(4).nfe() == 4 and ConsistencyOptions(4).nfe(negative=True) == 8
    assert EulerOptions(25).nfe() == 50 and EulerOptions(25, cfg_scale=1.0).nfe() == 25
    # options saved by specs before typed options (every field of both samplers) still read
    old = {"kind": "euler", "steps": 10, "cfg_scale": 2.0, "guidance_t_max": 1.0, "negative_scale": 1.0}
    assert options_from_dict(old) == EulerOptions(10, cfg_scale=2.0)


class _TwoConditions(torch.nn.Module):
    """u(x, t, s | video, text) = x - video - text: one jump from t = 1 lands on video + text; counts calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t, s, prepared):
        self.calls += 1
        return x - prepared["video"] - prepared["text"]


def test_prompt_guidance_pushes_along_the_caption_alone():
    """u + g (u(video, text) - u(video, no text)): the caption's part of the endpoint is scaled by
    1 + g, the picture's is not; CFG's null branch passes through it unguided (Eq. 15 around it)."""
    noise = torch.randn(2, 3)
    video, text = torch.full((2, 3), 2.0), torch.full((2, 3), 0.5)
    cond, uncaptioned = {"video": video, "text": text}, {"video": video, "text": torch.zeros(2, 3)}
    null = {"video": torch.zeros(2, 3), "text": torch.zeros(2, 3)}
    net = _TwoConditions()
    out = sample(net, noise, cond, ConsistencyOptions(1, prompt_scale=3.0), None, uncaptioned)
    torch.testing.assert_close(out, video + 4.0 * text)  # x_0 = x_1 - u: video + (1 + g) text
    assert net.calls == 2 == ConsistencyOptions(1, prompt_scale=3.0).nfe(prompted=True)
    # Euler, one step, CFG w = 3 around it: w (video + (1 + g) text) + (1 - w) * 0
    net.calls = 0
    euler = EulerOptions(1, cfg_scale=3.0, prompt_scale=1.0)
    out = sample(net, noise, cond, euler, null, uncaptioned)
    torch.testing.assert_close(out, 3.0 * (video + 2.0 * text))
    assert net.calls == 3 == euler.nfe(prompted=True) and euler.nfe() == 2
    # with a negative prompt on a consistency model, the negative branch is not prompt-guided either
    negative = {"video": torch.zeros(2, 3), "text": torch.ones(2, 3)}
    out = sample(net, noise, cond, ConsistencyOptions(1, negative_scale=0.5, prompt_scale=1.0), negative, uncaptioned)
    torch.testing.assert_close(out, 1.5 * (video + 2.0 * text) - 0.5 * torch.ones(2, 3))
    # off: scale 0, or no uncaptioned conditions (an input without a caption)
    plain = sample(net, noise, cond, ConsistencyOptions(1))
    assert torch.equal(sample(net, noise, cond, ConsistencyOptions(1, prompt_scale=2.0)), plain)
    assert torch.equal(sample(net, noise, cond, ConsistencyOptions(1), None, uncaptioned), plain)
    assert isinstance(PromptGuided(net, uncaptioned, 1.0), torch.nn.Module)
    with pytest.raises(ValueError, match="prompt_scale must be in"):
        EulerOptions(prompt_scale=-1.0)


def test_the_pipeline_guides_on_the_prompt_only_when_there_is_one(tmp_path):
    config, encoder_set = preset_for_encoders("debug", "lite")
    torch.manual_seed(0)
    net = MMDiT(config)
    with torch.no_grad():  # its zero-initialised output layers would make every condition sound alike
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_network(tmp_path / "m", net, preset="debug", encoder_set=encoder_set, objective="vcm")
    pipe = Pipeline.load(tmp_path / "m", pretrained_encoders=False)
    video = make_video(tmp_path / "v.mp4", duration=1.5, size=(64, 48))
    guided = pipe.sampler(prompt_scale=2.0)
    silent = pipe.encode(video=video, duration=1.0)
    captioned = pipe.encode(video=video, prompt="a metal ball clanks", duration=1.0)
    assert not silent.prompted and captioned.prompted
    plain = pipe.synthesize(silent, pipe.sampler(), seed=3)
    same = pipe.synthesize(silent, guided, seed=3)  # nothing to push towards: one pass, the same output
    assert same.nfe == 1 and torch.equal(same.wave, plain.wave)
    pushed = pipe.synthesize(captioned, guided, seed=3)
    assert pushed.nfe == 2 and not torch.equal(pushed.wave, pipe.synthesize(captioned, pipe.sampler(), seed=3).wave)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"kind": "heun"}, "sampler must be one of"), ({"steps": 0}, "steps must be"),
     ({"kind": "euler", "guidance_t_max": 1.5}, "guidance_t_max"),
     ({"kind": "consistency", "cfg_scale": 2.0}, "cfg_scale is a setting of the euler sampler, not of consistency"),
     ({"kind": "euler", "negative_scale": 2.0}, "negative_scale is a setting of the consistency sampler")],
)  # fmt: skip
def test_sampler_options_refuse_bad_settings(kwargs, message):
    kwargs = {"kind": "consistency", **kwargs}
    with pytest.raises(ValueError, match=message):
        options_for(**kwargs)


def test_generate_help_says_which_options_apply(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "model and sampling" in text and "Consistency models" in text and "Flow-matching models" in text
    assert "--cfg is refused" in text and "--negative-scale is refused" in text
