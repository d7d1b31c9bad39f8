"""The ``soundvcm`` command line: thin argument parsing over the library.

soundvcm generate VIDEO|DIR|TSV [--prompt T] [--negative-prompt T] [--steps N] [--seed S] [--duration D]
                  [--model PATH] [--out DIR] [--image PATH] [--full] [--profile] [--device auto|cpu|cuda|mps]
soundvcm weights list | download NAME... | verify NAME...
soundvcm model init --preset P [--encoders SET] [--objective O] --out PATH
soundvcm convert mmaudio IN.pth OUT
soundvcm bench toy|network|pipeline ...
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from soundvcm import __version__

NETWORK_PRESET_NAMES = (
    "small_16k", "small_44k", "medium_44k", "large_44k", "large_44k_v2", "lite", "lite_small", "debug", "debug_v2",
)  # fmt: skip
"""Listed in help texts without importing torch; tests check it equals ``NETWORK_PRESETS``."""


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _dim(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"dimension must be >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soundvcm",
        description="SoundVCM: velocity consistency models for few-step video-to-audio generation.",
    )
    parser.add_argument("--version", action="version", version=f"soundvcm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser("bench", help="run a benchmark and print its table")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    toy = benches.add_parser(
        "toy",
        help="flow matching vs velocity consistency vs MeanFlow on exact Gaussian-mixture flows",
        description=(
            "Train one small network with flow matching, velocity consistency (SoundVCM) and MeanFlow (each also "
            "with p = 0 on the t = s rows) at equal CPU cost on class-conditional Gaussian mixtures whose guided "
            "flow is known exactly, over several mixture seeds; report sliced W2 to exact target samples (mean "
            "and std over seeds), average-velocity MSE, steps, CPU time per step and peak memory."
        ),
    )
    toy.add_argument("--quick", action="store_true", help="a < 60 s smoke run (one seed, 300 VCM steps)")
    toy.add_argument("--dim", type=_dim, default=2, help="data dimension (default 2; 2 also writes a PNG)")
    toy.add_argument("--seeds", type=_positive_int, default=None, help="mixture seeds to average over (default 5)")
    toy.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST..FIRST+N-1 (default 0)")
    toy.add_argument(
        "--vcm-steps",
        type=_positive_int,
        default=None,
        help="VCM training steps (default 4000); the other variants get the steps of equal CPU cost",
    )
    toy.add_argument("--workers", type=_positive_int, default=2, help="processes, one thread each (default 2)")
    toy.add_argument(
        "--replay",
        type=Path,
        default=None,
        metavar="JSON",
        help="rerun a --json result with its config and step counts (bit-reproducible)",
    )
    toy.add_argument(
        "--ablation", action="store_true", help="VCM ablation (Table 2): r, p, p on t = s rows, m and w, one at a time"
    )
    toy.add_argument(
        "--fixed-point",
        action="store_true",
        help="no training: where the p = 1 adaptive weight settles on t = s rows vs the exact velocity",
    )
    toy.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    toy.add_argument("--out", type=Path, default=Path("out/bench"), metavar="DIR", help="where plots go")
    toy.set_defaults(func=_bench_toy)
    netb = benches.add_parser(
        "network",
        help="parameter count, per-NFE latency and sampler totals of a network preset",
        description="Time one network evaluation at batch 1 and 8 and the 1, 4 and 25x2 NFE samplers.",
    )
    netb.add_argument("--preset", default="small_16k", help="network preset (default small_16k)")
    netb.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    netb.add_argument("--bf16", action="store_true", help="bf16 autocast around the network forward")
    netb.add_argument("--compile", action="store_true", help="torch.compile the network")
    netb.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (default 3)")
    netb.add_argument(
        "--reference-mmaudio",
        default=None,
        metavar="DIR",
        help="time MMAudio's own network in the same run (DIR: a checkout of MMAudio's source)",
    )
    netb.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    netb.set_defaults(func=_bench_network)

    gen = commands.add_parser(
        "generate",
        help="generate a soundtrack for a video (or audio from text or an image)",
        description="Generate audio for VIDEO (a file, a folder of videos, or a TSV of 'video<TAB>prompt' rows) and "
        "write OUT/NAME.flac plus OUT/NAME.mp4 with the new soundtrack. Without VIDEO, --prompt gives text-to-audio "
        "and --image image-to-audio. Outputs appear only when complete.",
    )
    gen.add_argument("input", nargs="?", type=Path, default=None, metavar="VIDEO", help="video file, folder or .tsv")
    gen.add_argument("--prompt", default=None, help="text condition (optional with a video)")
    gen.add_argument("--negative-prompt", default=None, help="what to steer away from (e.g. 'music')")
    gen.add_argument(
        "--negative-scale",
        type=float,
        default=1.0,
        help="how hard a consistency model steers away from --negative-prompt (default 1; for flow matching the "
        "negative prompt replaces the null condition and --cfg sets the strength)",
    )
    gen.add_argument("--image", type=Path, default=None, help="an image as the visual condition")
    gen.add_argument(
        "--model",
        default=None,
        help="a shipped model's name (default, default-fm: `soundvcm model list`) or a checkpoint path (NAME, "
        "NAME.json or NAME.safetensors); default: $SOUNDVCM_MODEL, else the shipped default",
    )
    gen.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="sampling steps (default 1 for consistency models, 25 for flow matching)",
    )
    gen.add_argument("--seed", type=int, default=42, help="noise seed (default 42)")
    gen.add_argument(
        "--duration",
        type=_positive_float,
        default=None,
        help="seconds to generate (with --full: the window); default: the length the model was trained on "
        "(4 s for the shipped models, 8 s for MMAudio's)",
    )
    gen.add_argument("--start", type=float, default=0.0, help="where in the video to start, seconds (default 0)")
    gen.add_argument(
        "--full", action="store_true", help="the whole video, in --duration windows crossfaded over --overlap seconds"
    )
    gen.add_argument("--overlap", type=float, default=0.5, help="window overlap for --full (default 0.5 s)")
    gen.add_argument(
        "--sampler",
        choices=("consistency", "euler"),
        default=None,
        help="default: consistency for VCM/MeanFlow checkpoints, euler + CFG for flow matching",
    )
    gen.add_argument(
        "--cfg",
        type=float,
        default=None,
        help="CFG strength of the euler sampler (flow matching; default 4.5); a consistency model has its "
        "guidance baked in by training, so --cfg with the consistency sampler is an error",
    )
    gen.add_argument("--out", type=Path, default=Path("out/generate"), help="output folder (default out/generate)")
    existing = gen.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    existing.add_argument(
        "--skip-existing", action="store_true", help="leave out jobs whose outputs exist (resume a batch)"
    )
    gen.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda or mps")
    gen.add_argument("--profile", action="store_true", help="print per-stage times")
    gen.add_argument(
        "--plot", action="store_true", help="also write OUT/NAME.png: the spectrogram, with a video's frames above it"
    )
    gen.set_defaults(func=_generate)

    wts = commands.add_parser("weights", help="list, download and verify the paper's weight files")
    wsub = wts.add_subparsers(dest="weights", required=True, metavar="ACTION")
    wl = wsub.add_parser("list", help="registered files, where they go and whether they are present")
    wl.set_defaults(func=_weights_list)
    wd = wsub.add_parser("download", help="download files (md5-checked; needs internet)")
    wd.add_argument("names", nargs="+", help="registry names (see `soundvcm weights list`)")
    wd.add_argument(
        "--dir", type=Path, default=None, help="target folder (default $SOUNDVCM_WEIGHTS or ~/.cache/soundvcm/weights)"
    )
    wd.set_defaults(func=_weights_download)
    wv = wsub.add_parser("verify", help="check presence, md5 and that the keys fit our modules")
    wv.add_argument("names", nargs="+", metavar="NAME", help="registry names (see `soundvcm weights list`)")
    wv.add_argument(
        "--dir", type=Path, default=None, help="folder holding the files (default $SOUNDVCM_WEIGHTS or ~/.cache/...)"
    )
    wv.set_defaults(func=_weights_verify)

    pb = benches.add_parser(
        "pipeline",
        help="per-stage times of generate at 1 NFE and 25x2 NFE (lite encoders; lite and small_16k networks)",
        description="Times decode, visual, sync, text, network, latent decode, vocoder and mux for one clip "
        "(model loading excluded), for random-initialised networks sized for the lite encoders.",
    )
    pb.add_argument("--video", default=None, help="clip to use (default: a synthesised 8 s 720p H.264 clip)")
    pb.add_argument("--duration", type=_positive_float, default=8.0, help="seconds (default 8)")
    pb.add_argument("--networks", default="lite,small_16k", help="comma-separated presets (default lite,small_16k)")
    pb.add_argument("--repeats", type=int, default=2, help="timed runs per setting after a warm-up (default 2)")
    pb.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    pb.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    pb.set_defaults(func=_bench_pipeline)

    tb = benches.add_parser(
        "train",
        help="samples/s and peak memory of one training step: FM, VCM and MeanFlow in the same run",
    )
    tb.add_argument("--preset", default="small_16k", help="network preset (default small_16k)")
    tb.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    tb.add_argument("--steps", type=int, default=2, help="timed steps per objective after a warm-up (default 2)")
    tb.add_argument("--device", default="cpu", help="cpu or cuda")
    tb.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    tb.add_argument("--compile", action="store_true", help="torch.compile the network")
    tb.add_argument("--objectives", default="fm,vcm,meanflow", help="comma-separated (default fm,vcm,meanflow)")
    tb.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    tb.set_defaults(func=_bench_train)

    be = benches.add_parser("embed", help="evaluation embedding throughput on this machine (clips/s)")
    be.add_argument("--clips", type=int, default=16, help="8 s clips to embed (default 16)")
    be.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON here")
    be.set_defaults(func=_bench_embed)

    bq = benches.add_parser(
        "quality",
        help="score models against reference rows on the open test sets (FD/KID/KL, onset F1, material accuracy)",
        description="Generates for every held-out clip of `soundvcm data open`'s test splits with each --row, adds the "
        "reference rows (silence, a random training clip, the ceiling: ground truth through the latent and vocoder, "
        "and the ground truth delayed by 100 ms), scores each with `evaluate` plus event metrics on the Foley world, "
        "and writes OUT/quality.json, a table per test set, spectrogram grids and a sync plot. Rerun to resume.",
    )
    bq.add_argument("--data", required=True, type=Path, help="folder written by `soundvcm data open`")
    bq.add_argument(
        "--row",
        action="append",
        default=None,
        metavar="NAME=MODEL[:SAMPLER[:STEPS[:CFG]]]",
        help="a model row (repeatable), e.g. vcm@1=default:consistency:1 fm@25=default-fm:euler:25; "
        "default: the shipped model at 1, 2 and 4 steps",
    )
    bq.add_argument("--sets", default="foley,bbb,sfx", help="comma-separated test sets (default foley,bbb,sfx)")
    bq.add_argument("--limit", type=_positive_int, default=None, help="first N clips of each test set (default all)")
    bq.add_argument("--duration", type=_positive_float, default=4.0, help="seconds per clip (default 4)")
    bq.add_argument("--seed", type=int, default=0, help="noise and random-clip seed (default 0)")
    bq.add_argument("--no-reference", action="store_true", help="skip the reference rows")
    bq.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    bq.add_argument("--out", type=Path, default=Path("out/bench/quality"), help="output folder")
    bq.set_defaults(func=_bench_quality)

    ext = commands.add_parser(
        "extract",
        help="turn media listed in a TSV into a sharded feature cache (resumable; parallel under torchrun)",
        description="Rows are 'path<TAB>caption'. Videos give video-text-audio sets, audio files text-audio sets. "
        "Rerun the same command to resume; under torchrun each rank writes its own shards.",
    )
    ext.add_argument("--input", required=True, type=Path, help="TSV of media paths and captions")
    ext.add_argument("--out", required=True, type=Path, help="cache folder")
    ext.add_argument("--encoders", default="lite", help="encoder set: lite, mmaudio_16k, mmaudio_44k (default lite)")
    ext.add_argument("--duration", type=_positive_float, default=8.0, help="seconds per clip (default 8)")
    ext.add_argument("--rows-per-shard", type=int, default=64, help="rows per shard file (default 64)")
    ext.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ext.set_defaults(func=_extract)

    tr = commands.add_parser(
        "train",
        help="train a network on feature caches (FM, VCM or MeanFlow; torchrun for several processes)",
        description="soundvcm train --preset NAME --data CACHE[:WEIGHT]... --out DIR [--steps N] [--resume] "
        "[key=value ...]. "
        "Presets: paper, fm_baseline, meanflow_baseline, lite_cpu, tiny_cpu. Caches may be soundvcm caches or "
        "MMAudio's TensorDict folders; each gets equal exposure unless weighted.",
    )
    tr.add_argument("--preset", default=None, help="training preset (default paper; with --resume: the run's own)")
    tr.add_argument("--data", nargs="+", required=True, help="cache folders, optionally PATH:WEIGHT")
    tr.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, EMA snapshots, tb, samples)")
    tr.add_argument("--steps", type=int, default=None, help="total steps (overrides the preset)")
    tr.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint and saved config"
    )
    tr.add_argument(
        "--allow-changes", action="store_true", help="with --resume: apply the given --steps/key=value changes"
    )
    tr.add_argument(
        "--allow-mixed-encoders",
        action="store_true",
        help="train on caches whose encoder weight files differ (refused by default)",
    )
    tr.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK if available), cpu or cuda")
    tr.add_argument(
        "--init",
        default=None,
        metavar="CKPT",
        help="start a new run from these weights (a soundvcm checkpoint or a shipped model's name, e.g. default); "
        "its network preset is used, and any objective can continue it",
    )
    tr.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. lr=2e-4 batch_size=64")
    tr.set_defaults(func=_train)

    cu = commands.add_parser("curves", help="plot training and validation curves of runs into one PNG")
    cu.add_argument(
        "runs", nargs="+", metavar="[NAME=]RUN", help="run folders (`soundvcm train --out`), optionally named"
    )
    cu.add_argument("--out", type=Path, default=Path("out/curves.png"), help="PNG path (default out/curves.png)")
    cu.set_defaults(func=_curves)

    data = commands.add_parser("data", help="build open training and test data")
    datas = data.add_subparsers(dest="data", required=True, metavar="SOURCE")
    foley = datas.add_parser(
        "foley",
        help="the synthetic Foley world: bouncing objects whose sounds occur at exactly known times",
        description="Write OUT/SPLIT/*.mp4 (+ .flac, .events.json) and OUT/SPLIT.tsv manifests (path<TAB>caption) "
        "for train, val and test, with disjoint seeds. Rerun to resume: finished clips are skipped.",
    )
    foley.add_argument("out", type=Path, help="output folder")
    foley.add_argument("--train", type=int, default=1000, help="training clips (default 1000)")
    foley.add_argument("--val", type=int, default=50, help="validation clips (default 50)")
    foley.add_argument("--test", type=int, default=300, help="test clips (default 300)")
    foley.add_argument("--duration", type=_positive_float, default=4.0, help="seconds per clip (default 4)")
    foley.add_argument("--seed", type=int, default=0, help="base seed of every split (default 0)")
    foley.set_defaults(func=_data_foley)

    op = datas.add_parser(
        "open",
        help="the open data recipe: Foley world with recorded one-shots, Big Buck Bunny windows, SFX text-audio sets",
        description="Downloads pinned Debian packages and moviepy's source distribution (checked by size and SHA-256, "
        "kept in OUT/downloads), then writes OUT/{foley,bbb,sfx}/SPLIT.tsv manifests (path<TAB>caption), the media, "
        "and OUT/ATTRIBUTION.md. Rerun to resume: verified downloads and finished files are skipped.",
    )
    op.add_argument("out", type=Path, help="output folder")
    op.add_argument("--parts", default="foley,bbb,sfx", help="comma-separated parts (default foley,bbb,sfx)")
    op.add_argument("--foley-train", type=int, default=2000, help="Foley training clips (default 2000)")
    op.add_argument("--foley-val", type=int, default=64, help="Foley validation clips (default 64)")
    op.add_argument("--foley-test", type=int, default=300, help="Foley test clips (default 300)")
    op.add_argument("--duration", type=_positive_float, default=4.0, help="seconds per clip or window (default 4)")
    op.add_argument("--seed", type=int, default=0, help="base seed of the Foley splits (default 0)")
    op.set_defaults(func=_data_open)

    ema = commands.add_parser("ema", help="synthesise post-hoc EMA weights from a run's snapshots")
    ema.add_argument("run", type=Path, help="run folder given to `soundvcm train --out`")
    ema.add_argument("--sigma-rel", type=_positive_float, default=0.05, help="EMA width (default 0.05)")
    ema.add_argument("--out", type=Path, default=None, help="checkpoint path (default RUN/ema_sigma0p05 etc.)")
    ema.set_defaults(func=_ema)

    ev = commands.add_parser(
        "evaluate",
        help="score generated audio against ground truth (av-benchmark keys; offline aisfx metrics)",
        description="Pairs files by stem (NAME-K predictions pair with NAME), caches ground-truth embeddings, and "
        "writes FD-AISFX, KL-AISFX, ISC-AISFX and Onset-Lag-ms plus a report of unpaired, short and unreadable files. "
        "With the paper's embedder weights present it adds FD-PANN, KL-PANNS-softmax, ISC-PANNS, FD-VGG and the "
        "PaSST keys; with --video, IB-Score and DeSync. Keys that could not be computed are listed with the reason.",
    )
    ev.add_argument("--pred", required=True, type=Path, help="folder of generated audio (wav/flac/...)")
    ev.add_argument("--gt", required=True, type=Path, help="folder of ground-truth audio, or an embedding cache file")
    ev.add_argument(
        "--video",
        type=Path,
        default=None,
        help="folder of the source videos: adds IB-Score and DeSync (needs `soundvcm weights download "
        "imagebind_huge synchformer`)",
    )
    ev.add_argument("--audio-length", type=_positive_float, default=8.0, help="seconds compared (default 8)")
    ev.add_argument("--out", type=Path, default=None, help="JSON output (default PRED/output_metrics.json)")
    ev.set_defaults(func=_evaluate)

    model = commands.add_parser("model", help="list shipped models, ship one, or create network checkpoints")
    models = model.add_subparsers(dest="model", required=True, metavar="ACTION")
    ml = models.add_parser("list", help="the models that ship with this install, checked by md5")
    ml.set_defaults(func=_model_list)
    sh = models.add_parser(
        "ship",
        help="copy a checkpoint into the package as a shipped model (fp16 weights, md5 manifest)",
        description="For maintainers: writes src/soundvcm/models/NAME.{safetensors,json} and records their md5s.",
    )
    sh.add_argument("checkpoint", type=Path, help="a soundvcm checkpoint (e.g. RUN/ema_sigma0p05)")
    sh.add_argument("--name", required=True, help="shipped name (default, default-fm, ...)")
    sh.add_argument("--description", default="", help="one line for `soundvcm model list`")
    sh.set_defaults(func=_model_ship)
    init = models.add_parser(
        "init",
        help="write a random-initialised network checkpoint (for tests and smoke runs)",
        description="Write NAME.safetensors + NAME.json for a freshly initialised network preset.",
    )
    init.add_argument("--preset", required=True, help=f"network preset: {', '.join(NETWORK_PRESET_NAMES)}")
    init.add_argument("--out", required=True, type=Path, help="output path (NAME, NAME.json or NAME.safetensors)")
    init.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    init.add_argument(
        "--encoders",
        default=None,
        help="encoder set whose feature sizes the network takes: lite, "
        "mmaudio_16k, mmaudio_44k (default: the preset's own; debug presets keep their sizes)",
    )
    init.add_argument(
        "--objective",
        default="vcm",
        help="objective recorded in the checkpoint, which picks the "
        "default sampler: vcm, vcm_sec43, meanflow (consistency) or fm (euler + CFG); default vcm",
    )
    init.set_defaults(func=_model_init)

    convert = commands.add_parser("convert", help="convert released checkpoints into soundvcm's format")
    converts = convert.add_subparsers(dest="source", required=True, metavar="SOURCE")
    mm = converts.add_parser(
        "mmaudio",
        help="an MMAudio network .pth (weights_only load, strict) -> soundvcm checkpoint",
        description=(
            "Load an MMAudio network checkpoint (mmaudio_small_16k.pth, ...) strictly with weights_only=True "
            "and save it as a soundvcm checkpoint with a zero-initialised offset embedder, so that "
            "v(x, t) = -net_mmaudio(x, 1 - t) at s = t."
        ),
    )
    mm.add_argument("input", type=Path, help="MMAudio .pth file")
    mm.add_argument("output", type=Path, help="output path (NAME, NAME.json or NAME.safetensors)")
    mm.add_argument("--variant", default=None, help="MMAudio variant (default: detected from the shapes)")
    mm.set_defaults(func=_convert_mmaudio)
    return parser


def _bench_network(args: argparse.Namespace) -> int:
    from soundvcm.bench.network import NetworkBenchConfig, run_network_bench, table

    cfg = NetworkBenchConfig(
        preset=args.preset,
        device=args.device,
        dtype="bfloat16" if args.bf16 else "float32",
        compile=args.compile,
        repeats=args.repeats,
        reference_mmaudio=args.reference_mmaudio,
    )
    rows = run_network_bench(cfg)
    print(table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _bench_pipeline(args: argparse.Namespace) -> int:
    import torch

    from soundvcm.bench.pipeline import PipelineBenchConfig, run_pipeline_bench, table

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.repeats < 1:
        raise ValueError("--repeats must be >= 1")
    cfg = PipelineBenchConfig(
        video=args.video,
        duration=args.duration,
        networks=tuple(n.strip() for n in args.networks.split(",") if n.strip()),
        repeats=args.repeats,
    )
    rows = run_pipeline_bench(cfg)
    print(f"## Pipeline, {cfg.duration:g} s clip, CPU, {torch.get_num_threads()} threads\n")
    print(table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _extract(args: argparse.Namespace) -> int:
    import torch

    from soundvcm.data.extract import extract

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.rows_per_shard < 1:
        raise ValueError("--rows-per-shard must be >= 1")
    meta, usable = extract(args.input, args.out, args.encoders, args.duration, args.rows_per_shard, device=device)
    kind = "video-text-audio" if meta.has_video else "text-audio"
    counted = f"{usable} of {meta.rows} rows usable" if usable is not None else f"{meta.rows} rows"
    print(f"{args.out}: {counted} ({kind}), {meta.num_shards} shard(s), encoders {meta.encoder_set}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from soundvcm.training.checkpoint import latest_checkpoint, read_checkpoint_doc
    from soundvcm.training.config import config_dict, config_from_dict, resume_config, train_config
    from soundvcm.training.trainer import Trainer, TrainingAborted, TrainingInterrupted

    extra = {"steps": args.steps} if args.steps is not None else {}
    saved = latest_checkpoint(args.out / "checkpoints") if args.resume else None
    if saved is not None:  # the run's own config, changed only when asked to
        config = resume_config(
            config_from_dict(read_checkpoint_doc(saved)["config"]), args.preset, args.overrides, args.allow_changes,
            **extra,
        )  # fmt: skip
    else:
        if args.allow_changes and not args.resume:
            raise ValueError("--allow-changes only goes with --resume")
        config = train_config(args.preset or "paper", args.overrides, **extra)
    if args.init is not None and saved is None:  # the network preset comes from the checkpoint
        from soundvcm import models
        from soundvcm.network.checkpoint import read_checkpoint_config
        from soundvcm.network.mmdit import NETWORK_PRESETS

        source = models.resolve_shipped(args.init) if models.is_shipped(args.init) else Path(args.init)
        preset = read_checkpoint_config(source).get("preset")
        if preset not in NETWORK_PRESETS:
            raise ValueError(f"--init {args.init}: its network preset {preset!r} is not one of this version's")
        config = dataclasses.replace(config, network=preset)
    trainer = Trainer(
        config, args.data, args.out, device=args.device, resume=args.resume,
        allow_mixed_encoders=args.allow_mixed_encoders, init=args.init if saved is None else None,
    )  # fmt: skip
    if trainer.rank == 0:
        from soundvcm.atomic import atomic_write

        resolved = {"train": config_dict(config), "objective": dataclasses.asdict(trainer.objective.config),
                    "init": args.init if saved is None else None}  # fmt: skip
        text = json.dumps(resolved, default=str)
        print(f"config: {text}", file=sys.stderr)
        atomic_write(Path(args.out) / "config.json", lambda tmp: tmp.write_text(json.dumps(json.loads(text), indent=1)))
    try:
        trainer.fit()
    except TrainingAborted as exc:
        raise ValueError(str(exc)) from exc
    except TrainingInterrupted as exc:
        if trainer.rank == 0:
            print(f"interrupted at step {exc.step}; saved {exc.checkpoint} (continue with --resume)", file=sys.stderr)
        return 130
    return 0


def _curves(args: argparse.Namespace) -> int:
    from soundvcm.training.curves import plot_curves

    runs = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        runs[name if sep else Path(item).name] = Path(path if sep else item)
    print(plot_curves(runs, args.out))
    return 0


def _data_open(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from soundvcm.data.open import OpenConfig, build_open

    for key in ("foley_train", "foley_val", "foley_test"):
        if getattr(args, key) < 0:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 0, got {getattr(args, key)}")
    cfg = OpenConfig(args.duration, args.foley_train, args.foley_val, args.foley_test, args.seed)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())

    def progress(total: int, desc: str):
        return tqdm(total=total, desc=desc, unit="file", file=sys.stderr)

    built = build_open(args.out, cfg, parts, progress)
    for manifests in built.values():
        for m in manifests:
            rows = max(0, len(m.read_text().splitlines()) - 1)
            print(f"{m}: {rows} rows")
    print(f"{args.out / 'ATTRIBUTION.md'}: sources and licences")
    return 0


def _data_foley(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from soundvcm.data.foley import FoleyConfig, make_split

    cfg = FoleyConfig(duration=args.duration)
    for split, count in (("train", args.train), ("val", args.val), ("test", args.test)):
        if count < 0:
            raise ValueError(f"--{split} must be >= 0, got {count}")
        if count:
            with tqdm(total=count, desc=f"foley {split}", unit="clip", file=sys.stderr) as bar:
                manifest = make_split(args.out, split, count, cfg, base_seed=args.seed, progress=bar.update)
            print(f"{manifest}: {count} clips")
    return 0


def _ema(args: argparse.Namespace) -> int:
    from soundvcm.network.checkpoint import config_from_dict
    from soundvcm.training.checkpoint import latest_checkpoint, read_checkpoint_doc
    from soundvcm.training.trainer import export_ema_checkpoint

    ckpt = latest_checkpoint(args.run / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"{args.run}: no training checkpoint")
    doc = read_checkpoint_doc(ckpt)
    if doc["step"] == 0:
        raise ValueError(f"{ckpt}: the run has not trained a step yet; there is no EMA to export")
    path, info = export_ema_checkpoint(
        args.run, args.sigma_rel, doc["step"], config_from_dict(doc["network_config"]), doc["config"]["network"],
        doc["encoder_set"], doc["config"]["objective"], args.out,
    )  # fmt: skip
    print(f"EMA sigma_rel {args.sigma_rel} at step {info['step']} from {info['snapshots']} snapshots -> {path}")
    print(json.dumps(info))
    return 0


def _bench_train(args: argparse.Namespace) -> int:
    from soundvcm.bench.train import TrainBenchConfig, run_train_bench, table

    cfg = TrainBenchConfig(
        preset=args.preset, batch=args.batch, steps=args.steps, device=args.device, bf16=args.bf16,
        compile=args.compile, objectives=tuple(o.strip() for o in args.objectives.split(",") if o.strip()),
    )  # fmt: skip
    rows = run_train_bench(cfg)
    print(table(rows, cfg))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from soundvcm.atomic import atomic_write
    from soundvcm.evaluation.evaluate import evaluate

    result = evaluate(args.pred, args.gt, args.audio_length, args.video)
    out = args.out or args.pred / "output_metrics.json"
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    for key, value in result.items():
        if key != "report":
            print(f"{key:16s} {value:.4f}")
    print(f"pairs: {result['report']['pairs']}; full report: {out}")
    return 0


def _bench_quality(args: argparse.Namespace) -> int:
    from soundvcm.bench.quality import QualityConfig, Row, run_quality

    texts = args.row or ["vcm@1=default:consistency:1", "vcm@2=default:consistency:2", "vcm@4=default:consistency:4"]
    rows = tuple(Row.parse(t) for t in texts)
    if len({r.name for r in rows}) != len(rows):
        raise ValueError("--row names must be unique")
    sets = tuple(x.strip() for x in args.sets.split(",") if x.strip())
    cfg = QualityConfig(
        args.data, args.out, rows, sets, args.duration, args.limit, args.seed, not args.no_reference, args.device
    )
    doc = run_quality(cfg)
    print(doc["table"])
    print(f"\n{args.out / 'quality.json'}; figures in {args.out}")
    return 0


def _bench_embed(args: argparse.Namespace) -> int:
    import time

    import torch

    from soundvcm.evaluation import aisfx
    from soundvcm.evaluation.panns import Cnn14
    from soundvcm.evaluation.vggish import VGGish
    from soundvcm.media.audio import resample

    net = aisfx.load_aisfx()
    panns, vgg = Cnn14().eval(), VGGish().eval()  # random init: throughput does not depend on the weights

    def run_panns(w):
        with torch.inference_mode():
            return panns(w[None])

    def run_vggish(w):
        with torch.inference_mode():
            return vgg.embed(w)

    from soundvcm.evaluation import passt
    from soundvcm.evaluation.imagebind import ImageBind, ImageBindConfig, audio_clips

    passt_net = passt.PaSST().eval()
    ib_audio = ImageBind(
        ImageBindConfig(vision_dim=64, vision_blocks=1, vision_heads=4)
    ).eval()  # audio branch full size

    def run_ib(w):
        with torch.inference_mode():
            return ib_audio.encode_audio(audio_clips(w))

    models = {
        "aisfx (real weights)": (aisfx.SAMPLE_RATE, lambda w: aisfx.embed_clip(net, w)),
        "PANNs Cnn14 16k": (16_000, run_panns),
        "VGGish": (16_000, run_vggish),
        "PaSST-S (10 s input)": (passt.SAMPLE_RATE, lambda w: passt.embed_clip(passt_net, w)),
        "ImageBind audio (3 x 2 s clips)": (16_000, run_ib),
    }
    g = torch.Generator().manual_seed(0)
    clips = [torch.randn(8 * 44_100, generator=g) * 0.1 for _ in range(args.clips)]
    rows = []
    print("| embedder | clips (8 s) | seconds | clips/s | threads |\n|---|---|---|---|---|")
    for name, (sr, fn) in models.items():
        inputs = [resample(c, 44_100, sr) if sr != 44_100 else c for c in clips]
        fn(inputs[0])
        start = time.perf_counter()
        for clip in inputs:
            fn(clip)
        seconds = time.perf_counter() - start
        row = {"embedder": name, "clips": args.clips, "seconds": seconds, "clips_per_s": args.clips / seconds,
               "threads": torch.get_num_threads()}  # fmt: skip
        rows.append(row)
        print(f"| {name} | {args.clips} | {seconds:.2f} | {row['clips_per_s']:.2f} | {row['threads']} |")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _model_list(args: argparse.Namespace) -> int:
    from soundvcm import models

    entries = models.manifest()
    if not entries:
        print(f"no models ship with this install; {models.RESTORE}")
        return 0
    for name, entry in entries.items():
        try:
            models.resolve_shipped(name)
            state = "ok"
        except (OSError, ValueError) as exc:
            state = f"DAMAGED: {exc}"
        print(f"{name:12s} {entry['parameters'] / 1e6:5.1f}M  {entry['description']}  [{state}]")
    return 0


def _model_ship(args: argparse.Namespace) -> int:
    from soundvcm import models

    if not args.name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"--name {args.name!r}: use letters, digits, '-' and '_'")
    path = models.ship(args.checkpoint, args.name, args.description)
    size = sum(f.stat().st_size for f in path.parent.glob(f"{args.name}.*")) / 1e6
    print(f"shipped {args.name}: {path}.safetensors + .json ({size:.1f} MB)")
    return 0


def _model_init(args: argparse.Namespace) -> int:
    import torch

    from soundvcm.network.checkpoint import save_network
    from soundvcm.network.mmdit import MMDiT, preset_for_encoders
    from soundvcm.objectives import OBJECTIVE_PRESETS

    if args.objective not in OBJECTIVE_PRESETS:
        raise ValueError(f"unknown objective '{args.objective}'; choose one of {sorted(OBJECTIVE_PRESETS)}")
    config, encoder_set = preset_for_encoders(args.preset, args.encoders)
    torch.manual_seed(args.seed)
    net = MMDiT(config)
    weights, cfg = save_network(
        args.out,
        net,
        preset=args.preset,
        encoder_set=encoder_set,
        objective=args.objective,
        provenance={"kind": "random-init", "seed": args.seed},
    )
    n = sum(p.numel() for p in net.parameters())
    print(f"wrote {weights} and {cfg} ({args.preset}, {n:,} parameters, random init)")
    return 0


def _convert_mmaudio(args: argparse.Namespace) -> int:
    from soundvcm.network.checkpoint import (
        detect_mmaudio_variant,
        mmaudio_to_soundvcm,
        read_mmaudio_state,
        save_network,
    )

    state = read_mmaudio_state(args.input)
    variant = args.variant or detect_mmaudio_variant(state)
    net = mmaudio_to_soundvcm(state, variant)
    weights, cfg = save_network(
        args.output,
        net,
        provenance={"kind": "converted", "source": "MMAudio", "variant": variant, "file": args.input.name},
    )
    print(f"converted MMAudio {variant} -> {weights} + {cfg}")
    return 0


def _bench_toy(args: argparse.Namespace) -> int:
    from soundvcm.bench.toy import QUICK, ToyBenchConfig, config_from_json, run_ablation, run_toy_bench, write_json

    if args.fixed_point:
        from soundvcm.bench.fixed_point import run_fixed_point

        print("## Fixed point of the adaptive weight on t = s rows (no network)\n")
        print(run_fixed_point(args.out, seed=args.first_seed))
        return 0
    cfg = ToyBenchConfig(dim=args.dim, workers=args.workers)
    if args.quick:
        cfg = replace(cfg, **QUICK)
    if args.seeds is not None:
        cfg = replace(cfg, seeds=tuple(range(args.first_seed, args.first_seed + args.seeds)))
    elif args.first_seed:
        cfg = replace(cfg, seeds=tuple(s + args.first_seed for s in range(len(cfg.seeds))))
    if args.vcm_steps is not None:
        cfg = replace(cfg, vcm_steps=args.vcm_steps)
    ablation = args.ablation
    if args.replay is not None:
        cfg, ablation = config_from_json(args.replay)
        cfg = replace(cfg, workers=args.workers)
    result = run_ablation(cfg) if ablation else run_toy_bench(cfg, args.out)
    title = "VCM ablation" if ablation else "Toy benchmark"
    print(f"## {title}, d={cfg.dim}, seeds {list(cfg.seeds)}, {cfg.vcm_steps} VCM steps, equal CPU cost\n")
    print(result["table"])
    if result.get("goals"):
        print("\n" + result["goals"])
    if "plot" in result:
        print(f"\nscatter plot: {result['plot']}")
    print(f"\nwall-clock: {result['wall_s']:.0f} s with {result['workers']} worker(s)")
    if args.json is not None:
        write_json(args.json, result)
        print(f"results: {args.json}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    import os

    from soundvcm import models
    from soundvcm.encoders import encoder_spec
    from soundvcm.generate import check_inputs, jobs_from_input, plan_jobs, run_generate
    from soundvcm.pipeline import CONSISTENCY_OBJECTIVES, Pipeline, min_duration

    model = args.model or os.environ.get("SOUNDVCM_MODEL")
    if model is None:
        if models.DEFAULT not in models.manifest():
            raise ValueError(
                "no model given and none ships with this install: pass --model PATH or set SOUNDVCM_MODEL; "
                + models.RESTORE
            )
        model = models.DEFAULT
    if args.full and args.overlap < 0:
        raise ValueError("--overlap must be >= 0")
    # everything that can be checked is checked before the model and encoders load (10-20 s)
    if args.start < 0:
        raise ValueError(f"--start must be >= 0, got {args.start}")
    jobs = plan_jobs(jobs_from_input(args.input, args.prompt, args.image), args.out, args.overwrite, args.skip_existing)
    if not jobs:
        print(f"nothing to do: every output exists in {args.out} (--skip-existing)")
        return 0
    encoder_set, doc = Pipeline.peek(model)
    if args.duration is None:
        args.duration = float(doc.get("network", {}).get("sequence", {}).get("duration", 8.0))
    sampler = args.sampler or ("consistency" if doc.get("objective") in CONSISTENCY_OBJECTIVES else "euler")
    if args.cfg is not None and sampler == "consistency":
        raise ValueError(
            "--cfg sets the euler sampler's guidance; this model samples with the consistency sampler, whose "
            "guidance is baked in by training (use --sampler euler to apply CFG, or leave --cfg out)"
        )
    jobs, errors = check_inputs(jobs, min_duration(encoder_spec(encoder_set)), 0.0 if args.full else args.start)
    if errors and not jobs:
        if len(errors) == 1:
            raise ValueError(errors[0])
        for line in errors:
            print(f"soundvcm: error: {line}", file=sys.stderr)
        print(f"soundvcm: {len(errors)} of {len(errors)} job(s) failed", file=sys.stderr)
        return 2
    for line in errors:
        print(f"soundvcm: error: {line}", file=sys.stderr)
    pipe = Pipeline.load(model, device=args.device)
    options = {
        "negative_prompt": args.negative_prompt,
        "negative_scale": args.negative_scale,
        "duration": args.duration,
        "start": args.start,
        "steps": args.steps,
        "seed": args.seed,
        "sampler": args.sampler,
        "cfg_scale": 4.5 if args.cfg is None else args.cfg,
        "window": args.duration,
        "plot": args.plot,
    }
    if args.full:
        options["overlap"] = args.overlap
    return run_generate(pipe, jobs, args.out, options, args.full, args.profile, failed=len(errors))


def _weights_list(args: argparse.Namespace) -> int:
    from soundvcm.encoders.weights import REGISTRY, weights_dir

    root = weights_dir()
    print(f"weights folder: {root}  (set SOUNDVCM_WEIGHTS to change it)")
    for w in REGISTRY.values():
        state = "present" if (root / w.filename).is_file() else "missing"
        print(f"{w.name:22s} {state:8s} {w.filename:36s} {w.description}")
    return 0


def _weights_download(args: argparse.Namespace) -> int:
    from soundvcm.encoders.weights import download, entry

    for name in args.names:
        entry(name)  # unknown names fail before any download
    for name in args.names:
        print(f"{name}: {download(name, args.dir)}")
    return 0


def _weights_verify(args: argparse.Namespace) -> int:
    from soundvcm.encoders.base import load_weights
    from soundvcm.encoders.weights import check_keys, expected_keys, resolve

    for name in args.names:
        path = resolve(name, args.dir)  # present, md5 matches
        if expected_keys(name) is not None:
            check_keys(name, load_weights(path, name))
        print(f"{name}: ok ({path})")
    return 0


def _mark_leaves(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand's parser a default ``_parser`` (itself), so errors show its usage."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        parser.set_defaults(_parser=parser)
    for action in subs:
        for child in action.choices.values():
            _mark_leaves(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _mark_leaves(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # a misspelled option: the subcommand's usage, not the top level's
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:  # bad input, missing files, bad weights: one line, no traceback
        print(f"soundvcm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
