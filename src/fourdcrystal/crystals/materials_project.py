"""Materials Project source: the real ``mp_api.client.MPRester`` with an on-disk cache and retries.

One query (filters from ``source.materials_project``) -> ``materials.summary.search``. The result
(material_id, formula, space group, structure) is cached in ``<cache_dir>/<query-hash>.json.gz``,
written atomically, so reruns never re-query (and need no API key).

Retries: the client is given a plain ``requests.Session`` so that there is exactly one retry layer,
ours (``max_retries`` extra attempts, sleeping ``backoff_s * 2**k``), on HTTP 429/5xx and connection
errors; the client's own session would silently retry 429/502/504 three more times per attempt.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import time
import warnings
from pathlib import Path

import pandas as pd

from fourdcrystal.atomic import atomic_path
from fourdcrystal.errors import UserError

log = logging.getLogger("fourdcrystal.crystals")

FIELDS = ["material_id", "formula_pretty", "structure", "symmetry"]
CACHE_FORMAT = 1
_RETRY_STATUS = re.compile(r"status code (429|5\d\d)\b")
_TRANSIENT_TEXT = ("Max retries exceeded", "Connection refused", "Connection aborted", "timed out",
                   "RemoteDisconnected", "ConnectionError")


class _Transient(Exception):
    """A failure worth retrying (HTTP 429/5xx, connection trouble)."""


def query_params(mp_cfg: dict) -> dict:
    """The search filters: the cache key and the arguments of ``summary.search``."""
    return {
        "energy_above_hull_max_eV": float(mp_cfg.get("energy_above_hull_max_eV", 0.05)),
        "max_sites": int(mp_cfg.get("max_sites", 40)),
        "max_elements": int(mp_cfg.get("max_elements", 4)),
        "exclude_elements": sorted(mp_cfg.get("exclude_elements") or []),
        "include_theoretical": bool(mp_cfg.get("include_theoretical", False)),
        "max_count": int(mp_cfg.get("max_count", 5000)),
        "endpoint": mp_cfg.get("endpoint") or "public",
    }


def cache_path(cache_dir: str | Path, params: dict) -> Path:
    key = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **params}, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{key}.json.gz"


def _api_key(mp_cfg: dict) -> str:
    key = mp_cfg.get("api_key") or os.environ.get("MP_API_KEY")
    if not key:
        raise UserError("source.kind is materials_project but no API key is set",
                        "export MP_API_KEY=<your 32-character key from materialsproject.org/api> "
                        "(or set source.materials_project.api_key), or use source.kind: builtin, which works offline")
    return key


def _search(params: dict, api_key: str, endpoint: str | None) -> list[dict]:
    """One attempt: construct the client and run the query; raise _Transient for retryable failures."""
    import requests
    from mp_api.client import MPRester
    from mp_api.client.core.exceptions import MPRestError

    from mp_api.client.core.settings import MAPI_CLIENT_SETTINGS

    ep = endpoint.rstrip("/") + "/" if endpoint else None
    base = ep or MAPI_CLIENT_SETTINGS.ENDPOINT
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # version-compatibility chatter from the client
            # The heartbeat the client reads at construction is not error-checked by it; check it here
            # so a 5xx there is a clean retryable failure instead of a KeyError deep in the client.
            hb = requests.get(base + "heartbeat", timeout=20)
            if hb.status_code == 429 or hb.status_code >= 500:
                raise _Transient(f"heartbeat returned HTTP {hb.status_code}")
            mpr = MPRester(api_key=api_key, endpoint=ep, session=requests.Session(),
                           use_document_model=False, mute_progress_bars=True)
            chunk = min(1000, params["max_count"])
            docs = mpr.materials.summary.search(
                energy_above_hull=(0.0, params["energy_above_hull_max_eV"]),
                num_sites=(1, params["max_sites"]),
                num_elements=(1, params["max_elements"]),
                exclude_elements=params["exclude_elements"] or None,
                theoretical=None if params["include_theoretical"] else False,
                fields=FIELDS,
                chunk_size=chunk,
                num_chunks=-(-params["max_count"] // chunk),
                _sort_fields="material_id",
            )
    except MPRestError as exc:
        msg = str(exc)
        if _RETRY_STATUS.search(msg) or any(t in msg for t in _TRANSIENT_TEXT):
            raise _Transient(msg.splitlines()[0]) from None
        raise UserError(f"Materials Project query failed: {msg.splitlines()[0]}",
                        "check the API key and the source.materials_project filters") from None
    except requests.exceptions.RequestException as exc:
        raise _Transient(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    except (KeyError, ValueError, TypeError) as exc:  # a reply the client could not parse
        raise UserError(f"unexpected reply from the Materials Project endpoint {base} ({type(exc).__name__}: {exc})",
                        "check source.materials_project.endpoint (null: the public API)") from None
    return [dict(d) for d in docs][: params["max_count"]]


def fetch(mp_cfg: dict, cache_dir: str | Path, sleep=time.sleep) -> list[dict]:
    """Cached query results: list of {material_id, formula, spacegroup, spacegroup_number, structure}."""
    params = query_params(mp_cfg)
    path = cache_path(cache_dir, params)
    if path.exists():
        with gzip.open(path, "rt") as fh:
            cached = json.load(fh)
        log.info("materials_project: %d entries from cache %s (no query)", len(cached["entries"]), path)
        return cached["entries"]
    api_key = _api_key(mp_cfg)
    retries = int(mp_cfg.get("max_retries", 5))
    backoff_s = float(mp_cfg.get("backoff_s", 1.0))
    for attempt in range(retries + 1):
        try:
            docs = _search(params, api_key, mp_cfg.get("endpoint"))
            break
        except _Transient as exc:
            if attempt == retries:
                raise UserError(f"Materials Project unreachable after {retries + 1} attempts ({exc})",
                                "retry later, raise source.materials_project.max_retries/backoff_s, "
                                "or use source.kind: builtin, which works offline") from None
            wait = backoff_s * 2**attempt
            log.warning("materials_project: attempt %d failed (%s); retrying in %.2f s", attempt + 1, exc, wait)
            sleep(wait)
    entries = [_entry(d) for d in docs]
    with atomic_path(path) as tmp:
        with gzip.open(tmp, "wt") as fh:
            json.dump({"format": CACHE_FORMAT, "params": params, "entries": entries}, fh)
    log.info("materials_project: %d entries fetched, cached in %s", len(entries), path)
    return entries


def _entry(doc: dict) -> dict:
    sym = doc.get("symmetry") or {}
    structure = doc["structure"]
    if hasattr(structure, "as_dict"):
        structure = structure.as_dict()
    return {"material_id": str(doc["material_id"]), "formula": doc.get("formula_pretty"),
            "spacegroup": sym.get("symbol"), "spacegroup_number": sym.get("number"), "structure": structure}


def mp_structures(mp_cfg: dict, cache_dir: str | Path) -> pd.DataFrame:
    from pymatgen.core import Structure

    from fourdcrystal.crystals.table import structure_row, to_table

    rows = []
    for e in fetch(mp_cfg, cache_dir):
        try:
            s = Structure.from_dict(e["structure"])
        except Exception as exc:  # a malformed document: skip it, keep the rest
            log.warning("materials_project: skipping %s: bad structure (%s)", e["material_id"], exc)
            continue
        if not s.is_ordered:
            log.warning("materials_project: skipping %s: disordered", e["material_id"])
            continue
        rows.append(structure_row(s, e["material_id"], "materials_project", e["material_id"]))
    if not rows:
        raise UserError("the Materials Project query returned no usable structures",
                        "loosen source.materials_project filters (energy_above_hull_max_eV, max_sites, ...)")
    return to_table(rows)
