"""The one recipe for seeds derived from names: SHA-256 of the text, identical in every process,
platform and Python version (Python's hash() is salted per process)."""
from __future__ import annotations

import hashlib


def stable_hash(text: str) -> int:
    """A 64-bit integer of ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def stable_seed(*parts) -> int:
    """A 63-bit seed from the parts' text (joined by "/")."""
    return stable_hash("/".join(str(p) for p in parts)) >> 1
