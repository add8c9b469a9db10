"""Bitwise repeatable CPU multislice across processes.

FFTW chooses among equivalent algorithms for a transform; with a *measuring* planner the choice
depends on timings, so two processes could round differently (seen: ~4e-7 on the probe images,
and a flaky killed-then-rerun shard comparison).  fourdcrystal.simulation.multislice pins the planner
to FFTW_ESTIMATE with one thread; this test runs the same orientation in fresh processes, the only
place a new plan (hence a new algorithm choice) is made, and requires identical bytes.
"""
import json
import os
import subprocess
import sys

from conftest import ROOT

CHILD = """
import hashlib, json
import numpy as np
from pymatgen.core import Lattice, Structure
from fourdcrystal.geometry import Geometry
from fourdcrystal.simulation.multislice import ProbeSetting, simulate_orientation
from fourdcrystal.simulation.supercells import align_zone_to_z, build_supercell

geo = Geometry(box_A=16.0, gpts=96, detector_px=48, thicknesses_A=(8.0, 16.0), slice_thickness_A=2.0,
               energies_eV=(200e3, 300e3), semiangle_mrad_range=(3.0, 5.0))
sim = {"parametrization": "lobato", "projection": "infinite", "frozen_phonons": 0, "phonon_sigma_A": 0.08,
       "qz_sigma_invA": 0.075, "tukey_alpha": 0.25, "defocus_A": [0.0, 0.0]}
si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
atoms = build_supercell(si, align_zone_to_z(si.lattice.matrix, (1, 1, 0)), geo)
probes = [ProbeSetting(0, 200e3, 4.0, 20.0), ProbeSetting(1, 300e3, 3.0, 0.0)]
arrays, _, _ = simulate_orientation(atoms, geo, sim, probes)
print(json.dumps({k: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for k, a in arrays.items()}))
"""


def _run_children(n: int) -> list[dict]:
    """Run the child n times at once: competing for the cores is what made measured plans differ."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def test_simulate_orientation_is_bitwise_repeatable_across_processes():
    first, second = _run_children(2)
    assert set(first) == {"probe", "cbed", "vg", "qz"}
    assert first == second, {k: first[k] == second[k] for k in first}
    assert len({first[k] for k in first}) == 4  # four different arrays: the hashes see the data
