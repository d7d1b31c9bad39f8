"""Checkpoint format, `soundvcm model init` and `soundvcm convert mmaudio`."""

import json

import pytest
import torch

import soundvcm
from mmaudio_fixture import fixture_check, load_fixture, mmaudio_pth
from soundvcm.cli import main
from soundvcm.network.checkpoint import checkpoint_paths, load_network, save_network
from soundvcm.network.mmdit import MMDiT, network_preset


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = MMDiT(network_preset("debug"))
    with torch.no_grad():
        net.offset_embed.mlp[2].weight.normal_()
    weights, config = save_network(tmp_path / "m", net, objective="vcm", ema_sigma_rel=0.05)
    assert weights.name == "m.safetensors" and config.name == "m.json"
    doc = json.loads(config.read_text())
    assert doc["objective"] == "vcm" and doc["network"]["sequence"]["duration"] == 1.0
    loaded = soundvcm.load_network(tmp_path / "m.json")
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave nothing behind


def test_mismatched_checkpoint_is_refused(tmp_path):
    save_network(tmp_path / "a", MMDiT(network_preset("debug")))
    doc = json.loads((tmp_path / "a.json").read_text())
    doc["network"]["depth"] = 4  # config says 4 blocks, weights have 3
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="does not fit the network: missing"):
        load_network(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="checkpoint config not found"):
        load_network(tmp_path / "nothing")
    (tmp_path / "b.json").write_text((tmp_path / "a.json").read_text())
    (tmp_path / "b.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable safetensors"):
        load_network(tmp_path / "b")


def test_model_init_cli(tmp_path, capsys):
    assert main(["model", "init", "--preset", "debug", "--out", str(tmp_path / "tiny")]) == 0
    assert "random init" in capsys.readouterr().out
    net = load_network(tmp_path / "tiny")
    assert isinstance(net, MMDiT)
    doc = json.loads((tmp_path / "tiny.json").read_text())
    assert doc["preset"] == "debug" and doc["provenance"]["kind"] == "random-init"
    assert {"network", "encoder_set", "objective", "ema_sigma_rel"} <= set(doc)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_convert_mmaudio_reproduces_reference(tmp_path, version, fixture_threads, record_property):
    pth, data = mmaudio_pth(tmp_path, version)
    meta, _ = load_fixture(f"mmaudio_tiny_{version}.safetensors")
    variant = "debug" if version == "v1" else "debug_v2"
    assert main(["convert", "mmaudio", str(pth), str(tmp_path / "conv"), "--variant", variant]) == 0
    net = load_network(tmp_path / "conv")
    t = 1 - data["input.t_mmaudio"]
    cond = {"clip": data["input.clip"], "sync": data["input.sync"], "text": data["input.text"]}
    with torch.no_grad():
        v = net(data["input.latent"], t, t, net.prepare(cond))
    exact = (1 - t) == data["input.t_mmaudio"]  # rows whose time flips exactly: bitwise in fp32
    assert exact.sum() >= 2
    fixture_check(v[exact], -data["output.flow"][exact], meta, record_property)
    torch.testing.assert_close(v, -data["output.flow"], rtol=1e-5, atol=1e-5)


class Evil:
    """An arbitrary class: pickling it makes a file that weights_only loading must refuse."""


def test_convert_refuses_unsafe_and_wrong_files(tmp_path, capsys):
    bad = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, bad)
    assert main(["convert", "mmaudio", str(bad), str(tmp_path / "o")]) == 2
    assert "not a readable PyTorch weights file" in capsys.readouterr().err
    pth, _ = mmaudio_pth(tmp_path, "v1")
    state = torch.load(pth, weights_only=True)
    state.pop("fused_blocks.0.ffn.w2.weight")
    torch.save(state, pth)
    assert main(["convert", "mmaudio", str(pth), str(tmp_path / "o"), "--variant", "debug"]) == 2
    err = capsys.readouterr().err
    assert "missing 1 (first: fused_blocks.0.ffn.w2.weight)" in err
    assert main(["convert", "mmaudio", str(tmp_path / "absent.pth"), str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "o.safetensors").exists()
    assert checkpoint_paths(tmp_path / "o.json")[0].name == "o.safetensors"


def _mmaudio_derived(head_dim, latent_len, clip_len, freq_dim=256, max_period=1e4):
    """The buffers MMAudio keeps in its state dict, computed the way MMAudio computes them."""
    freqs = 1.0 / (10000 ** (torch.arange(0, freq_dim, 2, dtype=torch.float32) / freq_dim)) * (10000 / max_period)

    def rot(n, scaling):
        f = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)) * scaling
        a = torch.arange(n, dtype=torch.float32)[:, None] * f[None]
        return torch.stack([a.cos(), -a.sin(), a.sin(), a.cos()], dim=-1).reshape(1, n, head_dim // 2, 2, 2)

    return {
        "t_embed.freqs": freqs,
        "latent_rot": rot(latent_len, 1.0),
        "clip_rot": rot(clip_len, latent_len / clip_len),
    }


def test_convert_accepts_and_checks_mmaudio_derived_buffers(tmp_path, capsys):
    pth, data = mmaudio_pth(tmp_path, "v1")
    state = torch.load(pth, weights_only=True)
    cfg = network_preset("debug")
    derived = _mmaudio_derived(cfg.hidden_dim // cfg.num_heads, cfg.sequence.latent_seq_len,
                               cfg.sequence.clip_seq_len, cfg.t_freq_dim, cfg.t_max_period)  # fmt: skip
    torch.save({**state, **derived}, pth)
    assert main(["convert", "mmaudio", str(pth), str(tmp_path / "conv"), "--variant", "debug"]) == 0
    net = load_network(tmp_path / "conv")
    t = 1 - data["input.t_mmaudio"]
    cond = {"clip": data["input.clip"], "sync": data["input.sync"], "text": data["input.text"]}
    with torch.no_grad():
        v = net(data["input.latent"], t, t, net.prepare(cond))
    torch.testing.assert_close(v, -data["output.flow"], rtol=1e-5, atol=1e-5)
    derived["latent_rot"] = derived["latent_rot"][:, :-1]  # a file made for another duration
    torch.save({**state, **derived}, pth)
    assert main(["convert", "mmaudio", str(pth), str(tmp_path / "o2"), "--variant", "debug"]) == 2
    assert "latent_rot in the file" in capsys.readouterr().err
