"""``soundvcm data foley|open|subset``: the synthetic Foley world, the open data recipe, and a cache of
the directed world's clips of one kind."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from soundvcm.cli.common import add_out_argument, positive_float, positive_int, seed


def register(commands) -> None:
    data = commands.add_parser("data", help="build open training and test data")
    datas = data.add_subparsers(dest="data", required=True, metavar="SOURCE")
    foley = datas.add_parser(
        "foley",
        help="the synthetic Foley world: bouncing objects whose sounds occur at exactly known times",
        description="Write OUT/SPLIT/*.mp4 (+ .flac, .events.json) and OUT/SPLIT.tsv manifests (path<TAB>caption) "
        "for train, val and test, with disjoint seeds. Rerun to resume: finished clips are skipped.",
    )
    add_out_argument(foley, "output folder")
    foley.add_argument("--train", type=int, default=1000, help="training clips (default 1000)")
    foley.add_argument("--val", type=int, default=50, help="validation clips (default 50)")
    foley.add_argument("--test", type=int, default=300, help="test clips (default 300)")
    foley.add_argument("--duration", type=positive_float, default=4.0, help="seconds per clip (default 4)")
    foley.add_argument("--seed", type=seed, default=0, help="base seed of every split (default 0)")
    add_jobs_argument(foley)
    foley.set_defaults(func=_data_foley)

    op = datas.add_parser(
        "open",
        help="the open data recipe: Foley world with recorded one-shots, Big Buck Bunny windows, SFX text-audio sets",
        description="Downloads pinned Debian packages and moviepy's source distribution (checked by size and SHA-256, "
        "kept in OUT/downloads), then writes OUT/{foley,bbb,sfx,directed}/SPLIT.tsv manifests (path<TAB>caption), "
        "the media, and OUT/ATTRIBUTION.md. Rerun to resume: verified downloads and finished files are skipped.",
    )
    add_out_argument(op, "output folder")
    op.add_argument(
        "--parts", default="foley,bbb,sfx,directed", help="comma-separated parts (default foley,bbb,sfx,directed)"
    )
    op.add_argument("--foley-train", type=int, default=2000, help="Foley training clips (default 2000)")
    op.add_argument("--foley-val", type=int, default=64, help="Foley validation clips (default 64)")
    op.add_argument("--foley-test", type=int, default=300, help="Foley test clips (default 300)")
    op.add_argument("--directed-train", type=int, default=3000, help="directed Foley training clips (default 3000)")
    op.add_argument("--directed-test", type=int, default=200, help="directed Foley test clips (default 200)")
    op.add_argument("--duration", type=positive_float, default=4.0, help="seconds per clip or window (default 4)")
    op.add_argument("--seed", type=seed, default=0, help="base seed of the Foley splits (default 0)")
    add_jobs_argument(op)
    op.set_defaults(func=_data_open)

    sub = datas.add_parser(
        "subset",
        help="a feature cache of the directed world's clips of one kind (e.g. the swapped ones, to weigh them "
        "in a training mix)",
        description="Copy the rows of CACHE (extracted from the directed world's training clips) whose clip, per its "
        "NAME.events.json in --clips, has the given --mode into a new cache at --out.",
    )
    sub.add_argument("cache", type=Path, help="feature cache of the directed training clips (`soundvcm extract`)")
    sub.add_argument("--clips", required=True, type=Path, help="the folder of those clips (e.g. DATA/directed/train)")
    sub.add_argument("--mode", required=True, choices=("match", "swap", "palette"), help="which clips to keep")
    add_out_argument(sub, "new cache folder")
    sub.set_defaults(func=_data_subset)


def add_jobs_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="processes rendering the Foley worlds' clips (default: one per CPU); the same files for any number",
    )


def _jobs(args: argparse.Namespace) -> int:
    from soundvcm.data.render_pool import default_jobs

    return args.jobs or default_jobs()


def _data_subset(args: argparse.Namespace) -> int:
    import json

    from soundvcm.data.cache import subset_cache

    def mode(name: str) -> str:
        path = args.clips / f"{name}.events.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: --clips must be the folder the cache was extracted from")
        return json.loads(path.read_text()).get("mode", "")

    kept = subset_cache(args.cache, args.out, lambda name, _: mode(name) == args.mode)
    print(f"{kept} {args.mode} rows -> {args.out}")
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
                manifest = make_split(
                    args.out, split, count, cfg, base_seed=args.seed, progress=bar.update, jobs=_jobs(args)
                )
            print(f"{manifest}: {count} clips")
    return 0


def _data_open(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from soundvcm.data.open import OpenConfig, build_open

    for key in ("foley_train", "foley_val", "foley_test", "directed_train", "directed_test"):
        if getattr(args, key) < 0:
            raise ValueError(f"--{key.replace('_', '-')} must be >= 0, got {getattr(args, key)}")
    cfg = OpenConfig(
        args.duration, args.foley_train, args.foley_val, args.foley_test, args.directed_train,
        directed_test=args.directed_test, seed=args.seed, jobs=_jobs(args),
    )  # fmt: skip
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
