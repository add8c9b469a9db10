"""One GPU per job inside a shared multi-GPU allocation.

Snakemake runs several jobs at once inside one SLURM allocation (a job group filling a 4-GPU node,
or ``profiles/nersc-interactive`` inside ``salloc``) but assigns them no GPU ids: every job sees all
GPUs and would pile onto GPU 0. ``gpu_slot()`` gives each concurrently running job its own GPU by
taking an exclusive ``fcntl.flock`` on one lock file per visible GPU, in a directory shared by the
jobs of one allocation (keyed by SLURM_JOB_ID and step), and sets ``CUDA_VISIBLE_DEVICES`` to the
GPU it holds. The kernel releases a flock when its holder dies, so a crashed job never leaks a slot.

Without GPUs (CPU runs, CI) it is a no-op that yields ``None``.

``FOURDCRYSTAL_JOBS_PER_GPU=k`` (default 1) lets k jobs share each GPU (k slots per GPU, filled GPU
by GPU in turn): one simulate job leaves a large GPU mostly idle while it starts up and computes its
kinematic truth on the CPU (`make pretrained-gpu` runs 8 per H200).

Usage in a stage::

    with gpu_slot() as gpu:          # gpu: the device id now in CUDA_VISIBLE_DEVICES, or None
        simulate(..., device="gpu" if gpu is not None else "cpu")

or around any command: ``python -m fourdcrystal.simulation.gpu_slots -- python train.py ...``.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fourdcrystal.errors import UserError

log = logging.getLogger(__name__)

# CUDA_VISIBLE_DEVICES values that mean "no GPU" (SLURM writes NoDevFiles when gres has no files).
_NO_GPU = {"", "-1", "none", "nodevfiles"}


def visible_gpus(env=None) -> list[str]:
    """Device ids this process may use, most specific source first.

    CUDA_VISIBLE_DEVICES (set by SLURM for a step with GPUs, or by the user) wins; then SLURM's own
    lists for the step or job; then the count SLURM_GPUS_ON_NODE; then nvidia-smi on a workstation.
    """
    env = os.environ if env is None else env
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        ids = [x.strip() for x in cvd.split(",") if x.strip()]
        return [] if not ids or ids[0].lower() in _NO_GPU else ids
    for key in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if env.get(key):
            return [x.strip() for x in env[key].split(",") if x.strip()]
    n = env.get("SLURM_GPUS_ON_NODE")
    if n and n.isdigit():
        return [str(i) for i in range(int(n))]
    return _nvidia_smi_gpus()


def _nvidia_smi_gpus() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def lock_dir(env=None) -> Path:
    """Directory shared by the jobs that compete for the same GPUs.

    Jobs of one SLURM allocation and step see the same GPUs, so they share SLURM_JOB_ID and
    SLURM_STEP_ID; different steps got their own GPUs from SLURM and must not block each other.
    $TMPDIR is node-local on NERSC compute nodes, which is the right scope (GPUs are per node).
    """
    env = os.environ if env is None else env
    base = env.get("FOURDCRYSTAL_GPU_LOCK_DIR") or env.get("TMPDIR") or tempfile.gettempdir()
    key = env.get("SLURM_JOB_ID", "local")
    if env.get("SLURM_STEP_ID"):
        key += "." + env["SLURM_STEP_ID"]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(base) / f"fourdcrystal-gpu-slots-{uid}-{key}"


def _try_lock(path: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # The holder's pid is for people debugging a stuck allocation; the lock itself is the flock.
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def jobs_per_gpu(env=None) -> int:
    """Jobs allowed on one GPU at once (FOURDCRYSTAL_JOBS_PER_GPU, default 1)."""
    env = os.environ if env is None else env
    text = env.get("FOURDCRYSTAL_JOBS_PER_GPU", "1")
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"FOURDCRYSTAL_JOBS_PER_GPU={text!r} is not a positive integer", "set it to 1 or more")
    return int(text)


@contextlib.contextmanager
def gpu_slot(env=None, poll_s: float = 0.2, timeout_s: float | None = None):
    """Hold one visible GPU exclusively for the duration of the block.

    Yields the device id (a string, as it appears in CUDA_VISIBLE_DEVICES) and sets
    ``os.environ["CUDA_VISIBLE_DEVICES"]`` to it, restoring the previous value afterwards; yields
    None and changes nothing when no GPU is visible. Waits while all GPUs are held by other jobs
    (Snakemake's gpu resource normally prevents that); raises UserError after ``timeout_s``.
    """
    env = os.environ if env is None else env
    gpus = visible_gpus(env)
    if not gpus:
        yield None
        return
    directory = lock_dir(env)
    directory.mkdir(parents=True, exist_ok=True)
    slots = [(gpu, k) for k in range(jobs_per_gpu(env)) for gpu in gpus]  # spread over GPUs first
    t0 = time.monotonic()
    warned = False
    while True:
        for gpu, k in slots:
            name = re.sub(r'[^A-Za-z0-9_.-]', '_', gpu)
            fd = _try_lock(directory / (f"gpu-{name}.lock" if k == 0 else f"gpu-{name}-{k}.lock"))
            if fd is not None:
                break
        else:
            waited = time.monotonic() - t0
            if timeout_s is not None and waited > timeout_s:
                raise UserError(f"all {len(slots)} slots of {len(gpus)} GPUs ({','.join(gpus)}) stayed busy for "
                                f"{waited:.0f} s",
                                "give the jobs of one allocation no more gpu resources in total than "
                                "the allocation has GPUs (profile set-resources / --resources gpu=N)")
            if not warned:
                log.warning("all %d GPUs are held by other jobs of this allocation; waiting", len(gpus))
                warned = True
            time.sleep(poll_s)
            continue
        break
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    log.info("pinned to GPU %s (of %s) via %s", gpu, ",".join(gpus), directory)
    try:
        yield gpu
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        os.close(fd)  # releases the flock


def main(argv=None) -> int:
    """``python -m fourdcrystal.simulation.gpu_slots -- CMD ...``: run CMD pinned to one free GPU."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("usage: python -m fourdcrystal.simulation.gpu_slots -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with gpu_slot():
        # The flock fd is close-on-exec, so keep this process alive as the holder until CMD ends.
        return subprocess.call(argv)


if __name__ == "__main__":
    sys.exit(main())
