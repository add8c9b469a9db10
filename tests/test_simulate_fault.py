"""Fault tolerance of the simulate step: `kill -9` in the middle of publishing a shard, then rerun.

The job runs as a real separate process (the same function the Snakemake adapter calls).  We wait
until its temporary sibling directory appears, i.e. the store is being written, and SIGKILL it.
The rerun must leave a shard that validates and equals, array for array and row for row, a run
that was never interrupted.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from pymatgen.core import Lattice, Structure

from conftest import ROOT
from fourdcrystal.simulation import store
from fourdcrystal.errors import UserError
from fourdcrystal.simulation.supercells import build_crystal

CHILD = """
import sys, yaml
from fourdcrystal.simulation.shard import simulate_shard
cfg = yaml.safe_load(open(sys.argv[1]))
d = sys.argv[2]
simulate_shard(cfg, "si", d + "/cifs", d + "/orientations.csv", d + "/supercells.extxyz", 0, sys.argv[3])
"""


def _tiny(cfg):
    cfg["geometry"].update(box_A=16.0, gpts=64, detector_px=32, thicknesses_A=[6.0, 12.0], slice_thickness_A=2.0)
    cfg["orientations"].update(n_zone_axes=1, n_free=1, n_inplane=1, n_tilts=1)
    # both orientations in one shard: a bigger write, so the kill lands inside it
    cfg["simulation"].update(orientations_per_shard=2, probes_per_orientation=2)
    return cfg


def _start(cfg_path, d, out):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(cfg_path), str(d), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_mid_write(cfg_path, d, out, timeout_s=60):
    """Start a job and SIGKILL it once its temporary sibling exists; True if killed before publishing."""
    proc = _start(cfg_path, d, out)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout_s:
            if any(p.name.startswith(f".{out.name}.tmp-") for p in out.parent.iterdir()):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return not out.exists()
            if proc.poll() is not None:
                return False
            time.sleep(0.001)
        raise AssertionError("the simulate job never started writing")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _assert_same_shard(a: Path, b: Path):
    ga, gb = (zarr.open_group(str(p / "quartets.zarr"), mode="r") for p in (a, b))
    for k in store.ARRAY_NAMES:
        np.testing.assert_array_equal(ga[k][:], gb[k][:])
    for name in ("patterns.parquet", "reflections.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name))
    drop = {"timings_s"}  # wall-clock seconds differ run to run
    assert {k: v for k, v in ga.attrs.items() if k not in drop} == {k: v for k, v in gb.attrs.items() if k not in drop}


def test_kill_during_write_then_rerun_equals_clean_run(tmp_path, default_config):
    cfg = _tiny(default_config)
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    (tmp_path / "cifs").mkdir()
    si = Structure(Lattice.cubic(5.431), ["Si"] * 8,
                   [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0], [.25, .25, .25], [.25, .75, .75],
                    [.75, .25, .75], [.75, .75, .25]])
    si.to(filename=str(tmp_path / "cifs" / "si.cif"))
    build_crystal(si, "si", cfg, tmp_path / "orientations.csv", tmp_path / "supercells.extxyz")

    out = tmp_path / "simulate" / "si" / "shard-0000"
    out.parent.mkdir(parents=True)
    killed = False
    for _ in range(3):  # the write takes ~0.1 s; retry in the rare case the kill came after the rename
        killed = _kill_mid_write(cfg_path, tmp_path, out)
        if killed:
            break
        if out.exists():
            import shutil

            shutil.rmtree(out)
    assert killed, "could not kill the job while it was writing"
    # what the killed job left: no published shard, only a temporary sibling that cannot pass as one
    assert not out.exists()
    leftovers = [p for p in out.parent.iterdir() if p.name.startswith(".shard-0000.tmp-")]
    assert leftovers
    with pytest.raises(UserError, match="broken"):
        store.validate_shard(leftovers[0])

    rerun = _start(cfg_path, tmp_path, out)
    clean_out = tmp_path / "clean" / "shard-0000"
    clean = _start(cfg_path, tmp_path, clean_out)
    for p in (rerun, clean):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    assert store.validate_shard(out)["n_patterns"] == 2 * 2 * 2
    assert [p.name for p in out.parent.iterdir()] == ["shard-0000"]  # the stale temporary was removed
    _assert_same_shard(out, clean_out)
