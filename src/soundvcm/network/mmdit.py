"""The SoundVCM network: MMAudio's multimodal transformer with a two-time embedding (§3.5, B).

Data flow of ``forward(latent, t, s, prepared)``:

* ``prepare`` (t-independent, once per batch or sampling run): clip (B, Nc, Dc), sync (B, Ns, Ds)
  and text (B, 77, Dt) features are projected to D; sync gets a per-segment position embedding
  and is resampled (nearest) to the audio token length; pooled clip and text make the global
  condition MLP(avg(clip) + avg(text)) (B.1).
* ``global_c = t_embed(t) + offset_embed(s - t) + MLP(...)``: the two-time embedding (§3.5.2);
  ``extended_c = global_c + sync``: the frame-aligned condition.
* joint blocks over [latent || clip || text], then audio-only fused blocks, then the final block.
* ``patch`` > 1 (issue 33, step 3): each audio token carries ``patch`` consecutive latent frames
  (input projection over the stacked channels, the final block back to them); the latent is padded
  at its end to a multiple of ``patch`` and the pad cut from the output.

The output is the average velocity u(x_t, t, s) in the paper's convention (:mod:`soundvcm.flow`).
A network converted from MMAudio keeps MMAudio's time convention inside
(``mmaudio_time=True``): it evaluates ``-net(x, 1 - t)``, the flip of the shared notes.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundvcm.conditions import Conditions, Prepared
from soundvcm.network.config import NETWORK_PRESETS, PRESET_ENCODERS, PRESETS, MMDiTConfig, network_preset
from soundvcm.network.embeddings import TimeEmbedder
from soundvcm.network.layers import ChannelLastConv1d, FinalBlock, JointBlock, StreamBlock, SwiGLU, rope_rotations
from soundvcm.network.protocol import VelocityNet
from soundvcm.sequence import SequenceConfig


class MMDiT(VelocityNet):
    """u(latent, t, s | clip, sync, text) with MMAudio's parameter names."""

    condition_groups = {"video": ("clip", "sync"), "text": ("text",)}
    offset_embed: TimeEmbedder

    def __init__(self, config: MMDiTConfig = MMDiTConfig()):
        super().__init__()
        self.config = config
        d = config.hidden_dim
        act = nn.SiLU if config.v2 else nn.SELU
        self.audio_input_proj = nn.Sequential(
            ChannelLastConv1d(config.latent_dim * config.patch, d, 7, padding=3), act(), SwiGLU(d, config.mlp_ratio, 7)
        )
        if config.v2:
            self.clip_input_proj = nn.Sequential(nn.Linear(config.clip_dim, d), nn.SiLU(), SwiGLU(d, 4.0, 3))
            self.text_input_proj = nn.Sequential(nn.Linear(config.text_dim, d), nn.SiLU(), SwiGLU(d, 4.0, 1))
        else:
            self.clip_input_proj = nn.Sequential(nn.Linear(config.clip_dim, d), SwiGLU(d, 4.0, 3))
            self.text_input_proj = nn.Sequential(nn.Linear(config.text_dim, d), SwiGLU(d, 4.0, 1))
        self.sync_input_proj = nn.Sequential(
            ChannelLastConv1d(config.sync_dim, d, 7, padding=3), act(), SwiGLU(d, 4.0, 3)
        )
        self.clip_cond_proj = nn.Linear(d, d)
        self.text_cond_proj = nn.Linear(d, d)
        self.global_cond_mlp = SwiGLU(d, 4.0, 1)
        seg = config.sequence.sync_tokens_per_segment
        self.sync_pos_emb = nn.Parameter(torch.zeros(1, 1, seg, config.sync_dim))
        self.final_layer = FinalBlock(d, config.latent_dim * config.patch)
        freq_dim, period = (d, 1.0) if config.v2 else (config.t_freq_dim, config.t_max_period)
        self.t_embed = TimeEmbedder(d, freq_dim, period)
        if config.offset_embedding:  # zero output layer: a fresh network is s-independent
            self.offset_embed = TimeEmbedder(d, freq_dim, period, zero_output=True)
        self.joint_blocks = nn.ModuleList(
            [
                JointBlock(d, config.num_heads, config.mlp_ratio, pre_only=(i == config.num_joint - 1))
                for i in range(config.num_joint)
            ]
        )
        self.fused_blocks = nn.ModuleList(
            [StreamBlock(d, config.num_heads, config.mlp_ratio, kernel_size=3) for _ in range(config.fused_depth)]
        )
        # latent statistics and null features, saved with the weights
        self.latent_mean = nn.Parameter(torch.zeros(1, 1, config.latent_dim), requires_grad=False)
        self.latent_std = nn.Parameter(torch.ones(1, 1, config.latent_dim), requires_grad=False)
        self.empty_string_feat = nn.Parameter(torch.zeros(config.text_seq_len, config.text_dim), requires_grad=False)
        self.empty_clip_feat = nn.Parameter(torch.zeros(1, config.clip_dim))
        self.empty_sync_feat = nn.Parameter(torch.zeros(1, config.sync_dim))
        self._init_weights()
        # the timeline it was trained on: each call's default, never changed (another duration is an
        # argument of prepare / null_conditions, and RoPE follows the inputs' lengths)
        self.sequence: SequenceConfig = config.sequence
        self._rotations: dict[tuple[int, int, str], tuple[Tensor, Tensor]] = {}

    # ----- construction ------------------------------------------------------------------
    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        embedders = [self.t_embed] + ([self.offset_embed] if self.config.offset_embedding else [])
        for emb in embedders:
            for linear in emb.linears():
                nn.init.normal_(linear.weight, std=0.02)
        if self.config.offset_embedding:
            _, last = self.offset_embed.linears()
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        # every block's adaLN output layer (joint, fused, final) and the final projection start at 0
        zero: list[nn.Module] = [self.final_layer.conv]
        zero += [m.adaLN_modulation[-1] for m in self.modules() if isinstance(m, (StreamBlock, FinalBlock))]
        for m in zero:
            for p in (cast(nn.Linear, m).weight, cast(nn.Linear, m).bias):
                nn.init.zeros_(p)

    def rotations(self, latent_len: int, clip_len: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """RoPE tables for ``latent_len`` latent and ``clip_len`` clip tokens (the clip positions on
        the latent timeline), made once per length pair and device; they hold no weights."""
        key = (latent_len, clip_len, str(device))
        if key not in self._rotations:
            hd = self.config.head_dim
            latent = rope_rotations(latent_len, hd).to(device)
            clip = rope_rotations(clip_len, hd, freq_scaling=latent_len / clip_len).to(device)
            self._rotations[key] = (latent, clip)
        return self._rotations[key]

    # ----- protocol ----------------------------------------------------------------------
    def null_conditions(self, batch_size: int, seq: SequenceConfig | None = None) -> Conditions:
        """The null features for ``batch_size`` rows of ``seq``'s lengths (default: the trained ones)."""
        seq = seq or self.sequence
        return {
            "clip": self.empty_clip_feat[None].expand(batch_size, seq.clip_seq_len, -1),
            "sync": self.empty_sync_feat[None].expand(batch_size, seq.sync_seq_len, -1),
            "text": self.empty_string_feat[None].expand(batch_size, -1, -1),
        }

    def prepare_null(self, batch_size: int, seq: SequenceConfig | None = None) -> Prepared:
        """The prepared null conditions of ``seq``'s lengths (CFG's unconditional branch), broadcast."""
        one = self.prepare(self.null_conditions(1, seq), seq)
        return {k: v.expand(batch_size, *v.shape[1:]) for k, v in one.items()}

    def prepare(self, conditions: Conditions, seq: SequenceConfig | None = None) -> Prepared:
        """Project and pool the conditions once; reused by every forward of a step or sampler.
        ``seq``: the lengths of a clip of another duration (default: the trained one)."""
        clip, sync, text = conditions["clip"], conditions["sync"], conditions["text"]
        seq, cfg = seq or self.sequence, self.config
        expected = {
            "clip": (seq.clip_seq_len, cfg.clip_dim),
            "sync": (seq.sync_seq_len, cfg.sync_dim),
            "text": (cfg.text_seq_len, cfg.text_dim),
        }
        for name, shape in expected.items():
            got = tuple(conditions[name].shape[1:])
            if got != shape:
                raise ValueError(f"{name} features have shape {got}, the network expects {shape}")
        b = clip.shape[0]
        seg = cfg.sequence.sync_tokens_per_segment
        sync = (sync.view(b, -1, seg, cfg.sync_dim) + self.sync_pos_emb).flatten(1, 2)  # (B, Ns, Ds)
        clip = self.clip_input_proj(clip)  # (B, Nc, D)
        sync = self.sync_input_proj(sync)  # (B, Ns, D)
        text = self.text_input_proj(text)  # (B, 77, D)
        tokens = cfg.audio_tokens(seq.latent_seq_len)
        sync = F.interpolate(sync.transpose(1, 2), size=tokens, mode="nearest-exact").transpose(1, 2)
        pooled = self.clip_cond_proj(clip.mean(dim=1)) + self.text_cond_proj(text.mean(dim=1))
        return {"clip": clip, "sync": sync, "text": text, "pooled": pooled}

    def forward(
        self,
        latent: Tensor,
        t: Tensor,
        s: Tensor,
        prepared: Prepared | Tensor,
        sync_f: Tensor | None = None,
        text_f: Tensor | None = None,
    ) -> Tensor:
        """Average velocity u(latent, t, s) (B, N, latent_dim); t and s are (B,).

        Either ``forward(latent, t, s, prepared)`` with conditions from :meth:`prepare` (what
        objectives and samplers do, preparing once), or ``forward(latent, t, s, clip_f, sync_f,
        text_f)`` with raw features, prepared on the fly.
        """
        if isinstance(prepared, Tensor):
            if sync_f is None or text_f is None:
                raise TypeError("forward(latent, t, s, clip_f, sync_f, text_f) needs all three feature tensors")
            prepared = self.prepare({"clip": prepared, "sync": sync_f, "text": text_f})
        tokens, frames, patch = prepared["sync"].shape[1], latent.shape[1], self.config.patch
        if self.config.audio_tokens(frames) != tokens:  # prepare() put the sync features on the token timeline
            raise ValueError(f"latent has {frames} frames, the conditions were prepared for {tokens * patch}")
        latent_rot, clip_rot = self.rotations(tokens, prepared["clip"].shape[1], latent.device)
        flip = self.config.mmaudio_time
        t_in = 1 - t if flip else t
        time_c = self.t_embed(t_in)
        if self.config.offset_embedding:
            time_c = time_c + self.offset_embed(s - t)  # two-time embedding (§3.5.2)
        # the pooled-condition MLP runs per call on the batch, as in MMAudio's predict_flow: on
        # broadcast null conditions it then gives MMAudio's numbers bit for bit (B.1)
        global_c = (time_c + self.global_cond_mlp(prepared["pooled"]))[:, None]  # (B, 1, D)
        extended_c = global_c + prepared["sync"]  # (B, N, D), frame-aligned (B.1)
        x = self.audio_input_proj(self._tokens(latent))
        clip, text = prepared["clip"], prepared["text"]
        for block in self.joint_blocks:
            x, clip, text = block(x, clip, text, global_c, extended_c, latent_rot, clip_rot)
        for block in self.fused_blocks:
            x = block(x, extended_c, latent_rot)
        out = self.final_layer(x, extended_c if self.config.final_uses_extended else global_c)
        out = out.reshape(out.shape[0], -1, self.config.latent_dim)[:, :frames]  # tokens -> latent frames
        return -out if flip else out

    def _tokens(self, latent: Tensor) -> Tensor:
        """(B, N, C) latent frames -> (B, ceil(N / patch), patch * C) audio tokens, zero-padded at the end."""
        patch = self.config.patch
        if patch == 1:
            return latent
        pad = -latent.shape[1] % patch
        if pad:
            latent = F.pad(latent, (0, 0, 0, pad))
        return latent.reshape(latent.shape[0], -1, patch * latent.shape[2])

    def normalize(self, latent: Tensor) -> Tensor:
        return (latent - self.latent_mean) / self.latent_std

    def unnormalize(self, latent: Tensor) -> Tensor:
        return latent * self.latent_std + self.latent_mean


__all__ = ["MMDiT", "MMDiTConfig", "NETWORK_PRESETS", "PRESETS", "PRESET_ENCODERS", "network_preset"]
