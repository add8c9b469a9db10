"""Zarr v3 shard stores: contract layout, round trip, empty shards, lazy per-process reading."""
import json
import multiprocessing as mp

import numpy as np
import pandas as pd
import pytest
import zarr

from fourdcrystal.simulation import store
from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry

GEOM = Geometry(box_A=16.0, gpts=32, detector_px=16, thicknesses_A=(10.0,), slice_thickness_A=2.0)


def _arrays(n, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.random((n, 16, 16)).astype(np.float32) for k in store.ARRAY_NAMES}


def _write(path, n=5, **kw):
    arrays = _arrays(n)
    pats = pd.DataFrame({"crystal_id": ["c1"] * n, "thickness_A": np.linspace(10, 50, n)})
    refl = pd.DataFrame({"index": np.repeat(np.arange(n), 2), "h": np.tile([1, -1], n)})
    out = store.write_shard(path, arrays, pats, refl, GEOM,
                            attrs={"crystal_id": "c1", "shard": 0, "config_fingerprint": "abc"}, **kw)
    return out, arrays


def test_round_trip_and_contract_layout(tmp_path):
    out, arrays = _write(tmp_path / "shard-0000")
    summary = store.validate_shard(out)
    assert summary["n_patterns"] == 5 and summary["crystal_id"] == "c1"
    # plain zarr-python opens it; sharding codec with inner chunk (1, P, P) and one shard of all N
    g = zarr.open_group(str(out / "quartets.zarr"), mode="r")
    assert g.attrs["complete"] is True and g.attrs["n_patterns"] == 5
    assert Geometry.from_dict(g.attrs["geometry"]) == GEOM
    for name in store.ARRAY_NAMES:
        a = g[name]
        assert a.shape == (5, 16, 16) and a.chunks == (1, 16, 16) and a.shards == (5, 16, 16)
        meta = json.loads((out / "quartets.zarr" / name / "zarr.json").read_text())
        assert meta["zarr_format"] == 3
        codec = meta["codecs"][0]
        assert codec["name"] == "sharding_indexed"
        assert [c["name"] for c in codec["configuration"]["codecs"]] == ["bytes", "zstd"]
        np.testing.assert_array_equal(a[:], arrays[name])
    for i in (0, 4):
        q = store.read_pattern(out, i)
        assert set(q) == set(store.ARRAY_NAMES) and q["vg"].dtype == np.float32
        np.testing.assert_array_equal(q["cbed"], arrays["cbed"][i])
    pats = pd.read_parquet(out / "patterns.parquet")
    assert list(pats["index"]) == list(range(5))
    # nothing but the published directory is left beside it
    assert [p.name for p in tmp_path.iterdir()] == ["shard-0000"]


@pytest.mark.parametrize("compressor,dtype", [("blosc", "float16"), ("none", "float32")])
def test_compressors_and_dtypes(tmp_path, compressor, dtype):
    out, arrays = _write(tmp_path / "s", compressor=compressor, dtype=dtype, level=5)
    g = zarr.open_group(str(out / "quartets.zarr"), mode="r")
    assert g["cbed"].dtype == np.dtype(dtype)
    q = store.read_pattern(out / "quartets.zarr", 2)
    assert q["cbed"].dtype == np.float32  # readers always hand out float32
    np.testing.assert_allclose(q["cbed"], arrays["cbed"][2], rtol=1e-3 if dtype == "float16" else 0)


def test_empty_shard_is_valid(tmp_path):
    empty = {k: np.zeros((0, 16, 16), np.float32) for k in store.ARRAY_NAMES}
    out = store.write_shard(tmp_path / "e", empty, pd.DataFrame({"crystal_id": []}), pd.DataFrame(), GEOM)
    assert store.validate_shard(out)["n_patterns"] == 0
    assert len(pd.read_parquet(out / "reflections.parquet")) == 0


def test_bad_input_writes_nothing(tmp_path):
    arrays = _arrays(3)
    arrays["vg"][1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        store.write_shard(tmp_path / "x", arrays, pd.DataFrame({"a": range(3)}), pd.DataFrame(), GEOM)
    with pytest.raises(ValueError, match="shape"):
        store.write_shard(tmp_path / "x", _arrays(3) | {"qz": np.zeros((3, 8, 8))},
                          pd.DataFrame({"a": range(3)}), pd.DataFrame(), GEOM)
    with pytest.raises(UserError, match="compressor"):
        store.write_shard(tmp_path / "x", _arrays(3), pd.DataFrame({"a": range(3)}), pd.DataFrame(), GEOM,
                          compressor="lz4")
    assert list(tmp_path.iterdir()) == []


def test_validate_names_broken_shard(tmp_path):
    out, _ = _write(tmp_path / "shard-0003")
    (out / "patterns.parquet").unlink()
    pd.DataFrame({"index": [0, 1]}).to_parquet(out / "patterns.parquet")
    with pytest.raises(UserError, match=r"shard .*shard-0003 is broken \(patterns.parquet has 2 rows"):
        store.validate_shard(out)
    out2, _ = _write(tmp_path / "shard-0004")
    g = zarr.open_group(str(out2 / "quartets.zarr"), mode="r+")
    g["qz"][1, 0, 0] = np.nan
    with pytest.raises(UserError, match="NaN"):
        store.validate_shard(out2)
    with pytest.raises(UserError, match="missing"):
        store.validate_shard(tmp_path / "nope")


def _child_read(path, q):
    q.put(float(store.read_pattern(path, 1)["probe"].sum()))


def test_reader_cache_is_per_process(tmp_path):
    out, arrays = _write(tmp_path / "s")
    store.read_pattern(out, 0)  # parent opens (and caches) first, then forks
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_read, args=(str(out), q))
    p.start()
    val = q.get(timeout=30)
    p.join(30)
    assert p.exitcode == 0
    assert val == pytest.approx(float(arrays["probe"][1].sum()), rel=1e-6)
    with pytest.raises(IndexError):
        store.read_pattern(out, 5)


def test_load_manifest(tmp_path):
    df = pd.DataFrame({"store": ["a"] * 4, "index": range(4), "split": ["train", "val", "test", "train"]})
    df.to_parquet(tmp_path / "m.parquet")
    assert len(store.load_manifest(tmp_path / "m.parquet")) == 4
    assert list(store.load_manifest(tmp_path / "m.parquet", "train")["index"]) == [0, 3]
    with pytest.raises(UserError, match="split"):
        store.load_manifest(tmp_path / "m.parquet", "training")
    with pytest.raises(UserError, match="does not exist"):
        store.load_manifest(tmp_path / "none.parquet")
