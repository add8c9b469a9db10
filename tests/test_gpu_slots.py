"""GPU pinning inside a grouped allocation: real processes, real flocks, a fake 4-GPU environment."""
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fourdcrystal.simulation import gpu_slots
from fourdcrystal.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

# A job: take a slot, report the CUDA_VISIBLE_DEVICES it got, hold the slot until told to leave.
JOB = r"""
import os, sys, time
from pathlib import Path
from fourdcrystal.simulation.gpu_slots import gpu_slot
report, release = Path(sys.argv[1]), Path(sys.argv[2])
with gpu_slot(poll_s=0.05) as gpu:
    report.write_text(os.environ["CUDA_VISIBLE_DEVICES"] + "," + str(gpu))
    while not release.exists():
        time.sleep(0.02)
"""


def _env(tmp_path, devices):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(CUDA_VISIBLE_DEVICES=devices, SLURM_JOB_ID="4242", FOURDCRYSTAL_GPU_LOCK_DIR=str(tmp_path / "locks"),
               PYTHONPATH=str(ROOT / "src"))
    return env


def _start(tmp_path, env, name):
    report, release = tmp_path / f"{name}.got", tmp_path / f"{name}.release"
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(report), str(release)], env=env)
    return proc, report, release


def _wait_report(report, proc, timeout_s=30.0):
    t0 = time.monotonic()
    while not report.exists() or not report.read_text():
        assert proc.poll() is None, f"job exited early with {proc.returncode}"
        if time.monotonic() - t0 > timeout_s:
            return None
        time.sleep(0.02)
    cvd, gpu = report.read_text().split(",")
    assert cvd == gpu  # the yielded id is what the job's CUDA code will see
    return cvd


def test_concurrent_jobs_get_distinct_gpus_and_reuse_freed_slot(tmp_path):
    env = _env(tmp_path, "0,1,2,3")
    a, rep_a, rel_a = _start(tmp_path, env, "a")
    b, rep_b, rel_b = _start(tmp_path, env, "b")
    try:
        got_a, got_b = _wait_report(rep_a, a), _wait_report(rep_b, b)
        assert {got_a, got_b} <= {"0", "1", "2", "3"}
        assert got_a != got_b, "two concurrent jobs were pinned to the same GPU"
        rel_a.touch()
        assert a.wait(timeout=30) == 0
        # Lowest free slot first: the freed one is taken again rather than leaving it idle.
        c, rep_c, rel_c = _start(tmp_path, env, "c")
        got_c = _wait_report(rep_c, c)
        assert got_c == got_a and got_c != got_b
        rel_c.touch()
        assert c.wait(timeout=30) == 0
    finally:
        for p, rel in ((a, rel_a), (b, rel_b)):
            rel.touch()
            p.wait(timeout=30)


def test_job_waits_while_all_gpus_are_busy_then_takes_the_freed_one(tmp_path):
    env = _env(tmp_path, "0,1")
    a, rep_a, rel_a = _start(tmp_path, env, "a")
    b, rep_b, rel_b = _start(tmp_path, env, "b")
    c = None
    try:
        assert {_wait_report(rep_a, a), _wait_report(rep_b, b)} == {"0", "1"}
        c, rep_c, rel_c = _start(tmp_path, env, "c")
        assert _wait_report(rep_c, c, timeout_s=1.5) is None, "third job ran on a GPU that was taken"
        rel_b.touch()
        assert b.wait(timeout=30) == 0
        assert _wait_report(rep_c, c) == rep_b.read_text().split(",")[0]
        rel_c.touch()
        assert c.wait(timeout=30) == 0
    finally:
        for p, rel in ((a, rel_a), (b, rel_b)) + (((c, tmp_path / "c.release"),) if c else ()):
            rel.touch()
            p.wait(timeout=30)


def test_killed_holder_releases_its_slot(tmp_path):
    env = _env(tmp_path, "7")
    a, rep_a, _ = _start(tmp_path, env, "a")
    assert _wait_report(rep_a, a) == "7"
    a.kill()
    a.wait(timeout=30)
    with gpu_slots.gpu_slot(env=env, timeout_s=5) as gpu:
        assert gpu == "7"


def test_no_gpu_is_a_noop(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with gpu_slots.gpu_slot() as gpu:
        assert gpu is None
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_environment_is_restored_and_timeout_is_a_user_error(tmp_path, monkeypatch):
    env = _env(tmp_path, "0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with gpu_slots.gpu_slot(env=env) as gpu:
        assert gpu == "0"
        with pytest.raises(UserError, match="slots of 1 GPUs .* stayed busy"):
            with gpu_slots.gpu_slot(env=env, timeout_s=0.3, poll_s=0.05):
                pass
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"


def test_jobs_per_gpu_share_each_gpu_gpu_by_gpu(tmp_path, monkeypatch):
    env = {**_env(tmp_path, "0,1"), "FOURDCRYSTAL_JOBS_PER_GPU": "2"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(gpu_slots.gpu_slot(env=env)) for _ in range(4)]
        assert held == ["0", "1", "0", "1"]  # both GPUs get a job before either gets a second
        with pytest.raises(UserError, match="all 4 slots of 2 GPUs"):
            with gpu_slots.gpu_slot(env=env, timeout_s=0.2, poll_s=0.05):
                pass
    with pytest.raises(UserError, match="FOURDCRYSTAL_JOBS_PER_GPU='0'"):
        gpu_slots.jobs_per_gpu({"FOURDCRYSTAL_JOBS_PER_GPU": "0"})


@pytest.mark.parametrize("env,expected", [
    ({"CUDA_VISIBLE_DEVICES": "2,3"}, ["2", "3"]),
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, []),
    ({"SLURM_STEP_GPUS": "1", "SLURM_GPUS_ON_NODE": "4"}, ["1"]),
    ({"SLURM_GPUS_ON_NODE": "4"}, ["0", "1", "2", "3"]),
])
def test_visible_gpus_sources(env, expected):
    assert gpu_slots.visible_gpus(env) == expected


def test_lock_dir_separates_allocations_and_steps(tmp_path):
    base = {"FOURDCRYSTAL_GPU_LOCK_DIR": str(tmp_path)}
    d1 = gpu_slots.lock_dir({**base, "SLURM_JOB_ID": "1"})
    d2 = gpu_slots.lock_dir({**base, "SLURM_JOB_ID": "2"})
    d1s = gpu_slots.lock_dir({**base, "SLURM_JOB_ID": "1", "SLURM_STEP_ID": "3"})
    assert len({d1, d2, d1s}) == 3
