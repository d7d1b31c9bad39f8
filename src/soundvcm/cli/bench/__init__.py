"""``soundvcm bench``: each benchmark prints a table (results go to BENCHMARKS.md), grouped by what it
measures: speed (``network``, ``pipeline``, ``train``, ``vocoder``, ``embed``), scale-out (``dist``,
``extract``), quality (``quality``, ``listen``, ``direction``, ``sync``, ``precision``) and the method itself
(``toy``)."""

from __future__ import annotations

from soundvcm.cli.bench import direction, listen, method, quality, scale, speed, vocoder


def register(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="run a benchmark and print its table",
        description="Speed: network, pipeline, train, vocoder, embed. Scale-out: dist, extract. "
        "Quality: quality, listen, direction, sync, precision. The method on exact flows: toy.",
    )
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for group in (speed, vocoder, scale, quality, listen, direction, method):
        group.register(benches)
