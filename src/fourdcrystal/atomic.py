"""Atomic publication of outputs: write to a temporary name beside the target, then rename.

A killed job therefore leaves either the complete output or nothing that reads as valid (only a
``.tmp-*`` sibling that the next run removes).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def clean_stale_tmp(path: str | os.PathLike) -> None:
    """Remove leftovers of earlier killed writers of ``path``."""
    path = Path(path)
    if not path.parent.exists():
        return
    for p in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


_UNFINISHED: set[Path] = set()  # this process's temporary paths not yet published (``remove_unfinished``)


def _remove(tmp: Path) -> None:
    if tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def remove_unfinished() -> None:
    """Remove every temporary path of this process not yet published: for a process ending on a signal without
    unwinding (the CLI's SIGTERM: unwinding through a pool of workers that the same signal ended can block)."""
    for tmp in list(_UNFINISHED):
        _remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path (file or directory) and rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path)
    tmp = _tmp_sibling(path)
    _UNFINISHED.add(tmp)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        _UNFINISHED.discard(tmp)
        _remove(tmp)


def check_output_folder(path: str | os.PathLike, marker: str, inputs=(), flag: str = "--out") -> None:
    """Refuse (``UserError``) an output folder that a command would replace but must not: the current folder or an
    ancestor of it, a file, the folder holding one of ``inputs``, or a folder of other files — only a new path, an
    empty folder or an earlier output of the same command (one holding ``marker``) is replaced. ``atomic_path``
    replaces a folder whole: without this, ``--out`` naming the data's own folder deleted the data."""
    from fourdcrystal.errors import UserError

    out = Path(path)
    where = out.resolve()
    if not out.name or where == Path.cwd().resolve() or where in Path.cwd().resolve().parents:
        raise UserError(f"{flag} '{path}' is the current folder or one above it, which would be replaced",
                        f"name a new folder, e.g. {flag} results")
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} is a file",
                        f"name a folder for the outputs, e.g. {flag} {out.with_suffix('')}_out")
    for given in inputs:
        if given and (where == Path(given).resolve() or where in Path(given).resolve().parents):
            raise UserError(f"{flag} {out} holds the input {given}, which replacing the folder would delete",
                            f"name a new folder for the outputs, e.g. {flag} {out.name}_out")
    if out.is_dir() and not (out / marker).exists():
        others = sorted(p.name for p in out.iterdir())
        if others:
            raise UserError(f"{flag} {out} already holds {len(others)} other file(s) (e.g. {others[0]}) and is not an "
                            "earlier output of this command", "name a new folder, or empty or remove this one")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_table(path: str | os.PathLike, df) -> None:
    """Write a pandas DataFrame atomically; format from the suffix (.csv or .parquet)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
