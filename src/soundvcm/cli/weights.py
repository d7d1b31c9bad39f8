"""``soundvcm weights list|download|verify``: the registered weight files (:mod:`soundvcm.registry`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands) -> None:
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


def _weights_list(args: argparse.Namespace) -> int:
    from soundvcm.registry import REGISTRY
    from soundvcm.weights import weights_dir

    root = weights_dir()
    print(f"weights folder: {root}  (set SOUNDVCM_WEIGHTS to change it)")
    for w in REGISTRY.values():
        state = "present" if (root / w.filename).is_file() else "missing"
        print(f"{w.name:22s} {state:8s} {w.filename:36s} {w.description}")
    return 0


def _weights_download(args: argparse.Namespace) -> int:
    from soundvcm.registry import download, entry

    for name in args.names:
        entry(name)  # unknown names fail before any download
    for name in args.names:
        print(f"{name}: {download(name, args.dir)}")
    return 0


def _weights_verify(args: argparse.Namespace) -> int:
    from soundvcm.registry import check_keys, expected_keys, resolve
    from soundvcm.weights import load_weights

    for name in args.names:
        path = resolve(name, args.dir)  # present, md5 matches
        if expected_keys(name) is not None:
            check_keys(name, load_weights(path, name))
        print(f"{name}: ok ({path})")
    return 0
