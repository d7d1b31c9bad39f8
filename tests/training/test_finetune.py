"""Fine-tuning: --init from MMAudio networks, trainable subsets, LoRA (merged on export)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from soundvcm.network.checkpoint import MMAUDIO_NETWORKS, load_network, save_network
from soundvcm.network.mmdit import MMDiT
from soundvcm.spec import preset_for_encoders
from soundvcm.training.finetune import LoRALinear, add_lora, freeze_except, load_init, merge_lora
from soundvcm.weights import WeightFile
from training_factory import synthetic_cache as _synthetic_cache
from training_factory import tiny_config as _config
from training_factory import tiny_spec as _test_spec


@pytest.fixture(autouse=True)
def _test_encoder_set(monkeypatch):
    from soundvcm import encoders

    monkeypatch.setitem(encoders.ENCODER_SPECS, "test", _test_spec())


def _net(seed: int = 0) -> MMDiT:
    torch.manual_seed(seed)
    config, _ = preset_for_encoders("debug", "test")
    net = MMDiT(config).eval()
    with torch.no_grad():  # zero-initialised layers (final layer, adaLN) would hide every difference
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return net


def _conditions(net: MMDiT, b: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    seq, cfg = net.sequence, net.config
    return {"clip": torch.randn(b, seq.clip_seq_len, cfg.clip_dim, generator=g),
            "sync": torch.randn(b, seq.sync_seq_len, cfg.sync_dim, generator=g),
            "text": torch.randn(b, cfg.text_seq_len, cfg.text_dim, generator=g)}  # fmt: skip


def _inputs(net: MMDiT, b: int = 2):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(b, net.sequence.latent_seq_len, net.config.latent_dim, generator=g)
    return x, torch.tensor([0.9, 0.4]), torch.tensor([0.3, 0.4]), net.prepare(_conditions(net, b))


def test_lora_starts_as_the_base_network_and_merges_exactly():
    net = _net()
    x, t, s, prepared = _inputs(net)
    with torch.no_grad():
        before = net(x, t, s, prepared)
    wrapped = add_lora(net, rank=2)
    assert wrapped and all(isinstance(net.get_submodule(n), LoRALinear) for n in wrapped)
    assert all(p.requires_grad == (".lora_" in n) for n, p in net.named_parameters())  # only adapters train
    with torch.no_grad():
        assert torch.equal(net(x, t, s, prepared), before)  # B = 0: exactly the base network
        for name in wrapped:  # as if trained
            net.get_submodule(name).lora_B.normal_(0, 0.1)
        adapted = net(x, t, s, prepared)
    assert not torch.allclose(adapted, before)
    plain = _net(seed=5)
    plain.load_state_dict(merge_lora(net.state_dict()))  # strict: merged keys are the plain network's
    with torch.no_grad():
        torch.testing.assert_close(plain(x, t, s, prepared), adapted, rtol=1e-4, atol=1e-5)


def test_trainable_patterns_freeze_the_rest_and_say_when_nothing_matches():
    net = _net()
    names = freeze_except(net, ("offset_embed", "adaLN_modulation"))
    assert names and all("offset_embed" in n or "adaLN_modulation" in n for n in names)
    assert not any(p.requires_grad for n, p in net.named_parameters() if n not in names)
    with pytest.raises(ValueError, match="matches no parameter"):
        freeze_except(_net(), ("no_such_layer",))


def test_lora_run_trains_only_adapters_and_exports_a_plain_checkpoint(tmp_path):
    from soundvcm.training.trainer import Trainer

    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    base = Trainer(replace(_config(objective="fm"), steps=2), [data], tmp_path / "fm")
    base.fit()
    source = tmp_path / "fm" / "ema_sigma0p05"
    trainer = Trainer(replace(_config(objective="vcm", lora_rank=2), steps=4), [data], tmp_path / "lora", init=source)
    start = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    trainer.fit()
    end = trainer.net.state_dict()
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    assert changed and all(".lora_" in k for k in changed)  # the base network stayed as it was
    exported = load_network(tmp_path / "lora" / "ema_sigma0p05")  # strict: no adapter keys left
    assert not any(".lora_" in k for k in exported.state_dict())
    from soundvcm.training.export import ema_network

    merged = ema_network(trainer.net.config, trainer.ema.emas[0]).state_dict()
    weights = [k.replace(".lora_B", ".weight") for k in changed if k.endswith(".lora_B")]
    assert any(not torch.equal(merged[k], start[k]) for k in weights)  # the adapters' update is in the export
    with pytest.raises(ValueError, match="keeps its"):  # the adapters are part of the run's identity
        from soundvcm.training.config import resume_config

        resume_config(trainer.config, None, ["lora_rank=4"], allow_changes=True)


def test_init_from_a_registered_mmaudio_network(tmp_path, monkeypatch):
    """An MMAudio release (MMAudio's time convention, no offset embedder) continues as a VCM."""
    config, _ = preset_for_encoders("debug", "test")
    source = MMDiT(replace(config, mmaudio_time=True, final_uses_extended=False, offset_embedding=False))
    monkeypatch.setenv("SOUNDVCM_WEIGHTS", str(tmp_path))
    torch.save(source.state_dict(), tmp_path / "mmaudio_debug.pth")
    entry = WeightFile("mmaudio_debug", "mmaudio_debug.pth", "https://example.invalid", None, "test")
    monkeypatch.setitem(MMAUDIO_NETWORKS, "mmaudio_debug", entry)
    from soundvcm.network import mmdit

    monkeypatch.setitem(mmdit.NETWORK_PRESETS, "debug", config)  # the variant's preset, sized like the cache
    net = load_init("mmaudio_debug", "test", 1.0)
    assert net.config.mmaudio_time and torch.count_nonzero(net.offset_embed.mlp[-1].weight) == 0
    x, t, _, _ = _inputs(net)
    cond = _conditions(net)
    with torch.no_grad():  # at s = t the converted network is the released flow-matching network
        torch.testing.assert_close(net(x, t, t, net.prepare(cond)), source(x, t, t, source.prepare(cond)))
    with pytest.raises(ValueError, match="does not fit"):
        load_init("mmaudio_debug", "lite", 4.0)


def test_init_with_weights_that_do_not_fit_their_json_names_the_keys(tmp_path):
    from soundvcm.network.mmdit import network_preset

    config, _ = preset_for_encoders("debug", "test")
    save_network(tmp_path / "m", MMDiT(config), preset="debug", encoder_set="test")
    other = MMDiT(replace(config, depth=config.depth + 1))
    save_network(tmp_path / "deeper", other, preset="debug", encoder_set="test")
    (tmp_path / "deeper.json").write_text((tmp_path / "m.json").read_text())  # the JSON of a shallower net
    with pytest.raises(ValueError, match="unexpected .*fused_blocks|unexpected .*joint_blocks"):
        load_init(tmp_path / "deeper", "test", 1.0)
    assert network_preset("debug") is not None


def test_vcm_run_with_a_guided_teacher_loads_it_frozen_and_refuses_other_latents(tmp_path):
    """teacher.source: the frozen FM under the run's autocast, outside the trained parameters; a teacher
    whose latent statistics are not the student's is refused."""
    from soundvcm.training.trainer import Trainer

    data = str(_synthetic_cache(tmp_path / "a", rows=8))
    Trainer(replace(_config(objective="fm"), steps=2), [data], tmp_path / "fm").fit()
    source = tmp_path / "fm" / "ema_sigma0p05"
    overrides = (
        ("teacher.source", str(source)),
        ("teacher.prompt_scale", "2"),
        ("teacher.uncaptioned_source", str(source)),
    )
    config = replace(_config(objective="vcm", objective_overrides=overrides, objective_config=None), steps=2)
    trainer = Trainer(config, [data], tmp_path / "vcm", init=source)
    teacher = trainer.objective.teacher
    assert teacher is not None and not any(p.requires_grad for p in teacher.parameters())
    assert trainer.objective.uncaptioned_teacher is not None and trainer.objective.uncaptioned_teacher is not teacher
    ids = {id(p) for p in trainer.net.parameters()}
    assert not any(id(p) in ids for p in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    history = trainer.fit()
    assert history and all(torch.isfinite(torch.tensor(h["loss"])) for h in history if "loss" in h)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    other = str(_synthetic_cache(tmp_path / "b", rows=8, seed=5))
    with pytest.raises(ValueError, match="latent_mean differs"):  # a fresh student has its own statistics
        Trainer(config, [other], tmp_path / "vcm2")
