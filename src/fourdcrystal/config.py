"""Loading, validating and fingerprinting the workflow configuration.

The schema (``fourdcrystal/schemas/config.schema.yaml``, also reached as
``workflow/schemas/config.schema.yaml``) is the single definition of valid keys; the Snakefile
validates with it too.
"""
from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path

import yaml

from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry


def schema() -> dict:
    text = resources.files("fourdcrystal").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _path_of(err) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "<top level>"


def validate(config: dict) -> dict:
    """Check ``config`` against the schema and the geometry rules; raise a one-line UserError."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise UserError(f"config key '{_path_of(e)}': {e.message}",
                        "correct it in config/config.yaml (every key is described in config/README.md)")
    try:
        Geometry.from_config(config)
    except ValueError as exc:
        raise UserError(f"config key 'geometry': {exc}", "adjust the geometry section of config/config.yaml") from None
    return config


def merge(base: dict, overlay: dict) -> dict:
    """``overlay`` on top of ``base``, nested sections merged key by key (as ``snakemake --configfile
    config/config.yaml config/seed_scale.yaml`` does); returns a new dict, the inputs stay untouched."""
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _read(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"config file {path} does not exist", "pass the path of config/config.yaml")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]})",
                        "fix the YAML syntax") from None


def load(path: str | Path, *overlays: str | Path) -> dict:
    """Read a config file, merge any overlay files on top (later wins) and validate the result."""
    config = _read(Path(path))
    for overlay in overlays:
        config = merge(config, _read(Path(overlay)))
    return validate(config)


def digest(obj) -> str:
    """Short stable hash of a JSON-able object (keys sorted): the one recipe for every fingerprint."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(config: dict, sections=("seed", "source", "prototypes", "selection", "geometry",
                                        "orientations", "simulation", "dataset")) -> str:
    """A short stable hash of the sections that determine the simulated data."""
    return digest({k: config.get(k) for k in sections})
