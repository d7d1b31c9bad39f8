"""`soundvcm data subset`: a cache of the directed world's clips of one kind, row for row."""

from __future__ import annotations

import json

import pytest
import torch

from soundvcm.cli import main
from soundvcm.data.cache import CacheError, FeatureCache, subset_cache
from training_factory import synthetic_cache


def test_subset_keeps_exactly_the_chosen_rows_across_shards(tmp_path, capsys):
    source = synthetic_cache(tmp_path / "cache", rows=10, per_shard=4)
    clips = tmp_path / "clips"
    clips.mkdir()
    modes = ["swap" if i % 3 == 0 else "match" for i in range(10)]  # rows 0, 3, 6, 9: across three shards
    for i, mode in enumerate(modes):
        (clips / f"r{i}.events.json").write_text(json.dumps({"mode": mode}))
    assert (
        main(["data", "subset", str(source), "--clips", str(clips), "--mode", "swap", "--out", str(tmp_path / "s")])
        == 0
    )
    assert "4 swap rows" in capsys.readouterr().out
    full, part = FeatureCache(source), FeatureCache(tmp_path / "s")
    assert len(part) == 4 and part.meta.rows == 4 and part.meta.rows_per_shard == 4
    assert [i for s in range(part.meta.num_shards) for i in part.shard_info(s)[0]] == ["r0", "r3", "r6", "r9"]
    for j, i in enumerate([0, 3, 6, 9]):  # the same tensors, bit for bit
        assert all(torch.equal(part.row(j)[k], full.row(i)[k]) for k in full.keys)
    with pytest.raises(CacheError, match="already there"):  # never over an existing cache
        subset_cache(source, tmp_path / "s", lambda *_: True)
    with pytest.raises(CacheError, match="no row was kept"):
        subset_cache(source, tmp_path / "none", lambda *_: False)
    assert not (tmp_path / "none" / "meta.json").exists()


def test_subset_names_a_missing_events_file(tmp_path, capsys):
    source = synthetic_cache(tmp_path / "cache", rows=2)
    code = main(
        ["data", "subset", str(source), "--clips", str(tmp_path), "--mode", "swap", "--out", str(tmp_path / "s")]
    )
    assert code == 2 and "--clips must be the folder" in capsys.readouterr().err
