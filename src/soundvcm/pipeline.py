"""The one inference API: video and/or text and/or an image in, a waveform out.

``Pipeline.load(model)`` reads a soundvcm checkpoint, builds the encoder set it was trained with
(its JSON names it) and checks that the feature dimensions agree. ``generate(...)`` then runs

    decode video (8 fps visual frames, 25 fps sync frames) -> visual / sync / text encoders
    -> network sampling (Alg. 2 for consistency models, Euler + CFG for flow matching)
    -> latent decode -> vocoder -> waveform

and returns the waveform, its sample rate and the per-stage times (the CLI, the benchmarks and the
evaluation all call this module).

Modalities that are not given use the network's null features (image mode: one frame repeated over
the clip tokens and null sync, as MMAudio does). A video shorter than the requested duration is
generated for its real length, with a warning. The waveform's true peak is limited to -1 dBTP by a
plain gain (never clipped; :func:`soundvcm.media.audio.limit_peak`), with a warning when the gain
was below 1/2 (6 dB). Long spans: ``generate_long`` cuts the video into windows overlapping by
``overlap`` seconds, samples each window's mel on its own (seed + window index), crossfades the
overlaps linearly and vocodes the stitched mel once.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from soundvcm import models
from soundvcm.conditions import without_captions
from soundvcm.device import StageTimer, select_device
from soundvcm.encoders import encoder_spec, load_encoder_set
from soundvcm.encoders.base import take_frames
from soundvcm.encoders.hifigan import vocode_in_chunks
from soundvcm.hub import is_hub_id, resolve_hub, resolve_model
from soundvcm.media.audio import limit_peak
from soundvcm.media.mel import stitch_mels
from soundvcm.media.video import VideoClip, load_image, load_video, probe
from soundvcm.network.checkpoint import MMAUDIO_NETWORKS, is_registered_mmaudio, load_network, read_checkpoint_config
from soundvcm.network.protocol import autocast
from soundvcm.precision import INFERENCE_STAGES, PrecisionPlan, resolve_precision
from soundvcm.sampling import SamplerOptions, initial_noise, sample
from soundvcm.sequence import SequenceConfig, window_starts
from soundvcm.spec import ModelSpec, legacy_spec, read_spec
from soundvcm.weights import resolve

STAGES = ("decode", "visual", "sync", "text", "network", "latent_decode", "vocoder", "mux")


@dataclass
class GenerationResult:
    wave: Tensor  # (samples,) float32 in [-1, 1], on the CPU
    sample_rate: int
    duration: float
    start: float = 0.0
    truncated: bool = False
    nfe: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    damaged: bool = False  # the video had corrupt packets (mux re-encodes rather than copy them)


@dataclass
class Encoded:
    """What the encoders made of one input: conditions on the pipeline's device, plus notes."""

    conditions: dict[str, Tensor]
    duration: float
    start: float = 0.0
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    damaged: bool = False
    prompted: bool = False  # a caption was given (prompt guidance has something to push towards)


class Pipeline:
    def __init__(
        self,
        net,
        encoders,
        model_spec: ModelSpec,
        device: torch.device,
        precision: str | PrecisionPlan = "auto",
        model_path: Path | None = None,
        provenance: dict | None = None,
    ):
        self.net, self.encoders, self.model_spec = net, encoders, model_spec
        self.encoder_set, self.provenance, self.device = model_spec.encoder_set, provenance or {}, device
        # every stage's precision, decided once (soundvcm.precision): bf16 on a GPU, and on a CPU only
        # where it computes bf16 natively and a measured check finds it faster; fp32 elsewhere
        if not isinstance(precision, PrecisionPlan):
            precision = resolve_precision(precision, device, INFERENCE_STAGES)
        self.precision, self.dtype, self.model_path = precision, precision.dtype("network"), model_path
        self.default_duration = float(net.config.sequence.duration)  # the clip length the model was trained on
        self.spec = getattr(encoders, "spec", None) or encoder_spec(self.encoder_set)
        self.spec.check_network(net.config)
        self.encoders.set_precision(self.precision)

    @staticmethod
    def peek(model: str | Path) -> tuple[ModelSpec, dict]:
        """(spec, checkpoint config) of ``model`` without loading weights: enough to check inputs first."""
        if is_registered_mmaudio(model):
            return legacy_spec(
                {"encoder_set": "mmaudio", "preset": str(model).removeprefix("mmaudio_"), "objective": "fm"}
            ), {"objective": "fm"}
        if models.is_shipped(model):
            model = models.resolve_shipped(str(model), check=False)
        elif is_hub_id(model):
            model = resolve_hub(str(model))
        doc = read_checkpoint_config(model)
        spec = read_spec(doc)
        encoder_spec(spec.encoder_set)  # unknown sets fail here
        return spec, doc

    @classmethod
    def load(
        cls, model: str | Path, device: str = "auto", pretrained_encoders: bool = True, precision: str = "auto",
        vocoder: str = "auto",
    ) -> Pipeline:  # fmt: skip
        """Load a checkpoint (NAME, NAME.json or NAME.safetensors) and its encoder set, a model that
        ships with the package by name (``default``, see :mod:`soundvcm.models`), a hub id
        ``org/name[@revision]`` from huggingface_hub's cache (:mod:`soundvcm.hub`), or a registered
        MMAudio network by name (e.g. ``mmaudio_small_16k``), converted on the fly. ``precision``:
        auto, fp32 or bf16 (:func:`soundvcm.precision.resolve_precision`); ``vocoder``: auto (the
        model's own, else its encoder set's choice) or one the set lists (``EncoderSetSpec.vocoders``)."""
        if is_registered_mmaudio(model):
            return cls._load_mmaudio(str(model), device, pretrained_encoders, precision, vocoder)
        path = resolve_model(model)
        spec, doc = cls.peek(path)
        vocoder = spec.vocoder if vocoder == "auto" and spec.vocoder else vocoder  # the model's own choice
        dev = select_device(device)
        net = load_network(path, device=dev)
        encoder_spec(spec.encoder_set).check_network(net.config)  # before loading any encoder weights
        plan = resolve_precision(precision, dev, INFERENCE_STAGES)
        encoders = load_encoder_set(spec.encoder_set, dev, pretrained_encoders, plan, vocoder)
        return cls(net, encoders, spec, dev, plan, path, doc.get("provenance"))

    @classmethod
    def _load_mmaudio(
        cls, name: str, device: str, pretrained_encoders: bool, precision: str, vocoder: str = "auto"
    ) -> Pipeline:
        from soundvcm.network.checkpoint import mmaudio_to_soundvcm, read_mmaudio_state

        spec, _ = cls.peek(name)
        encoder_spec(spec.encoder_set).check_vocoder(vocoder)  # before reading any weights
        net = mmaudio_to_soundvcm(read_mmaudio_state(resolve(MMAUDIO_NETWORKS[name])), name.removeprefix("mmaudio_"))
        dev = select_device(device)
        plan = resolve_precision(precision, dev, INFERENCE_STAGES)
        encoders = load_encoder_set(spec.encoder_set, dev, pretrained_encoders, plan, vocoder)
        provenance = {"kind": "converted", "source": "MMAudio", "variant": name}
        return cls(net.to(dev).eval(), encoders, spec, dev, plan, None, provenance)

    # ----- defaults ----------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.spec.sequence.sample_rate

    @property
    def untrained(self) -> bool:
        """True when the checkpoint says it was never trained (``soundvcm model init``)."""
        return self.provenance.get("kind") == "random-init"

    @property
    def min_duration(self) -> float:  # the shortest clip the sync encoder takes, seconds
        return self.spec.sequence.min_duration

    def default_sampler(self) -> str:
        return self.model_spec.sampler.kind

    def sampler(self, kind: str | None = None, **settings) -> SamplerOptions:
        """The model's sampler options (its spec; ``kind``: another sampler's defaults) with ``settings``
        replaced (None: kept); a setting the sampler does not have is a ValueError naming it."""
        return self.model_spec.sampler_for(kind, **settings)

    # ----- conditions --------------------------------------------------------------------
    def _sequence(self, duration: float, source: str | Path | None = None) -> SequenceConfig:
        """The encoder set's timeline for a clip of ``duration`` seconds: every length of one call."""
        if duration < self.min_duration - 1e-9:
            what = f"{source}: " if source is not None else ""
            raise ValueError(f"{what}{duration:.2f} s is too short; the minimum is {self.min_duration:.2f} s")
        return self.spec.sequence.with_duration(duration)

    def _encode(
        self,
        timer: StageTimer,
        video: str | Path | None,
        image: str | Path | None,
        prompt: str | None,
        duration: float,
        start: float,
        decoded: VideoClip | None = None,
    ) -> tuple[dict[str, Tensor], float, bool, list[str], bool]:
        spec, notes = self.spec, []
        specs = {"clip": spec.clip_frames, "sync": spec.sync_frames}
        truncated = damaged = False
        frames = None
        if video is not None:
            with timer("decode"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # collected in clip.warnings instead
                    clip = decoded or load_video(video, specs, duration=duration, start=start)
                notes += clip.warnings
                damaged = clip.skipped_packets > 0
                if clip.truncated:
                    truncated = True
                    duration = math.floor(clip.duration * 100) / 100  # whole centiseconds
                    notes.append(f"generating {duration:.2f} s (the video's length) instead of the requested length")
                frames = clip.frames
        seq = self._sequence(duration, video)
        null = self.net.null_conditions(1, seq)
        conditions = {k: v.detach() for k, v in null.items()}
        if frames is not None:
            with timer("visual"):
                conditions["clip"] = self.encoders.encode_clip(frames["clip"][None, : seq.clip_seq_len])
            with timer("sync"):
                sync = take_frames(frames["sync"], seq.sync_frames_needed)
                conditions["sync"] = self.encoders.encode_sync(sync[None])
        elif image is not None:
            with timer("decode"):
                still = load_image(image, {"clip": spec.clip_frames})["clip"]
            with timer("visual"):
                feat = self.encoders.encode_clip(still[None])  # (1, 1, D)
                conditions["clip"] = feat.expand(1, seq.clip_seq_len, -1)
        if prompt is not None:
            with timer("text"):
                conditions["text"] = self.encoders.encode_text([prompt])
        for key, (n, d) in {
            "clip": (seq.clip_seq_len, spec.clip_dim),
            "sync": (seq.sync_seq_len, spec.sync_dim),
        }.items():
            if tuple(conditions[key].shape[1:]) != (n, d):
                raise ValueError(f"{key} features have shape {tuple(conditions[key].shape[1:])}, expected {(n, d)}")
        dev = self.device
        return {k: v.to(dev, torch.float32) for k, v in conditions.items()}, duration, truncated, notes, damaged

    # ----- generation --------------------------------------------------------------------
    @torch.inference_mode()
    def encode(
        self,
        video: str | Path | None = None,
        prompt: str | None = None,
        image: str | Path | None = None,
        duration: float | None = None,
        start: float = 0.0,
        timer: StageTimer | None = None,
        decoded: VideoClip | None = None,
    ) -> Encoded:
        """The conditions of one generation (decode + encoders), reusable by several
        :meth:`synthesize` calls (other seeds, samplers or step counts). ``decoded``: the video's
        frames, already decoded elsewhere with the encoder set's frame specs (batch engines)."""
        if video is None and image is None and prompt is None:
            raise ValueError("nothing to condition on: give a video, an image or a prompt")
        if video is not None and image is not None:
            raise ValueError("give either a video or an image, not both")
        duration = self.default_duration if duration is None else duration
        if duration <= 0:
            raise ValueError(f"duration must be positive, got {duration}")
        timer = timer or StageTimer(self.device)
        cond, duration, truncated, notes, damaged = self._encode(timer, video, image, prompt, duration, start, decoded)
        return Encoded(cond, duration, start, truncated, notes, dict(timer.times), damaged, prompt is not None)

    @torch.inference_mode()
    def synthesize(
        self,
        encoded: Encoded,
        options: SamplerOptions | None = None,
        seed: int = 42,
        negative_prompt: str | None = None,
        timer: StageTimer | None = None,
    ) -> GenerationResult:
        """Sample a latent for ``encoded``'s conditions with ``options`` (default: the model's own
        sampler, :meth:`sampler`), decode it and vocode it. A negative prompt steers both samplers
        (:func:`soundvcm.sampling.sample`)."""
        timer = timer or StageTimer(self.device)
        mel, nfe = self.synthesize_mel(encoded, options, seed, negative_prompt, timer)
        with timer("vocoder"):
            wave = self.encoders.vocode(mel)[0].float().cpu()
        notes = list(encoded.warnings)
        duration = encoded.duration
        wave, gain = limit_peak(wave[: int(round(duration * self.sample_rate))])
        if gain < 0.5:
            notes.append(f"the output peaked {-20 * math.log10(gain) - 1:.1f} dB over full scale; scaled to -1 dBTP")
        times = {**encoded.timings}
        for k, v in timer.times.items():
            times[k] = times.get(k, 0.0) + v
        return GenerationResult(
            wave, self.sample_rate, duration, encoded.start, encoded.truncated, nfe, times, notes, encoded.damaged
        )

    @torch.inference_mode()
    def synthesize_mel(
        self,
        encoded: Encoded,
        options: SamplerOptions | None = None,
        seed: int = 42,
        negative_prompt: str | None = None,
        timer: StageTimer | None = None,
    ) -> tuple[Tensor, int]:
        """(log-mel (1, mels, frames), NFE): :meth:`synthesize` before the vocoder."""
        options = options or self.model_spec.sampler
        timer = timer or StageTimer(self.device)
        seq, net = self._sequence(encoded.duration), self.net
        if negative_prompt is not None:
            with timer("text"):
                neg = {k: v.to(self.device) for k, v in net.null_conditions(1, seq).items()}
                neg["text"] = self.encoders.encode_text([negative_prompt]).to(self.device)
        with timer("network"):
            prepared = net.prepare(encoded.conditions, seq)
            null = net.prepare(neg, seq) if negative_prompt is not None else None
            if null is None and options.needs_null:
                null = net.prepare_null(1, seq)  # CFG's unconditional branch
            uncaptioned = None  # prompt guidance's other branch: the same video without its caption
            if encoded.prompted and options.prompt_scale != 0:
                uncaptioned = net.prepare(without_captions(encoded.conditions, net, seq), seq)
            shape = (1, seq.latent_seq_len, net.config.latent_dim)
            noise = initial_noise(shape, seed=seed).to(self.device)
            x = sample(autocast(net, self.dtype), noise, prepared, options, null, uncaptioned)
            latent = net.unnormalize(x)
        with timer("latent_decode"):
            mel = self.encoders.decode_latent(latent)
        return mel, options.nfe(negative=negative_prompt is not None, prompted=uncaptioned is not None)

    @torch.inference_mode()
    def generate(
        self,
        video: str | Path | None = None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        image: str | Path | None = None,
        duration: float | None = None,
        start: float = 0.0,
        options: SamplerOptions | None = None,
        seed: int = 42,
        timer: StageTimer | None = None,
        decoded: VideoClip | None = None,
    ) -> GenerationResult:
        """Generate audio for a video (``start`` to ``start + duration``; default: the length the model
        was trained on), an image and/or a prompt, with the sampler ``options`` (default: the model's)."""
        timer = timer or StageTimer(self.device)
        encoded = self.encode(video, prompt, image, duration, start, timer, decoded)
        encoded.timings = {}  # already in the shared timer
        return self.synthesize(encoded, options, seed, negative_prompt, timer)

    @torch.inference_mode()
    def generate_long(
        self,
        video: str | Path,
        window: float | None = None,
        overlap: float = 0.5,
        seed: int = 42,
        progress=None,
        timer: StageTimer | None = None,
        options: SamplerOptions | None = None,
        negative_prompt: str | None = None,
        start: float = 0.0,
        duration: float | None = None,
        **encode_kwargs,
    ) -> GenerationResult:
        """The video from ``start`` for ``duration`` s (None: to its end; time 0 = ``start``), in windows
        crossfaded and vocoded once in ~24 s chunks; progress(i, n) before window i of n and at the end."""
        window = self.default_duration if window is None else window
        rest = probe(video).duration - start
        total = duration if not math.isfinite(rest) else rest if duration is None else min(duration, rest)
        if total is None or total <= 0:
            raise ValueError(
                f"{video}: nothing to generate from {start:g} s (for a video of unknown length: --duration)"
            )
        starts = window_starts(total, window, overlap)
        timer = timer or StageTimer(self.device)
        hop = self.spec.sequence.hop_length
        fps = self.sample_rate / hop  # mel frames per second
        mels: list[tuple[int, Tensor]] = []
        notes: list[str] = []
        damaged, sr = False, self.sample_rate
        for i, s in enumerate(starts):
            if progress is not None:
                progress(i, len(starts))
            # a tail shorter than one sync segment is generated as a whole window ending at the end,
            # of which only the part from this window's start is kept
            at = s if total - s >= self.min_duration else max(0.0, total - window)
            encoded = self.encode(
                video=video, start=start + at, duration=min(window, total - at), timer=timer, **encode_kwargs
            )
            mel, _ = self.synthesize_mel(encoded, options, seed + i, negative_prompt, timer)
            skip = int(round((s - at) * fps))
            mels.append((int(round(s * fps)), mel[0, :, skip : math.ceil(encoded.duration * fps) + 1].float().cpu()))
            notes += encoded.warnings
            damaged = damaged or encoded.damaged
        if progress is not None:
            progress(len(starts), len(starts))
        with timer("vocoder"):
            stitched = stitch_mels(mels, int(round(overlap * fps)))
            wave = vocode_in_chunks(self.encoders.vocode, stitched.to(self.device), hop, 2048, 64).float().cpu()
        covered = min(wave.numel(), int(round(total * sr)))
        wave, _ = limit_peak(wave[:covered])
        return GenerationResult(wave, sr, covered / sr, start, False, 0, dict(timer.times), notes, damaged)
