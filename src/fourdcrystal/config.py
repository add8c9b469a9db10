"""Loading, validating and fingerprinting the workflow configuration.

The schema (``fourdcrystal/schemas/config.schema.yaml``, also reached as
``workflow/schemas/config.schema.yaml``) is the single definition of valid keys; the Snakefile
validates with it too.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
from importlib import resources
from pathlib import Path

import yaml

from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry


@functools.cache
def _schema_text() -> str:
    return resources.files("fourdcrystal").joinpath("schemas/config.schema.yaml").read_text()


def schema() -> dict:
    """The configuration schema: the one owner of every key's type, default and description."""
    return yaml.safe_load(_schema_text())


_NO_DEFAULT = object()


def _defaults(node: dict):
    if "default" in node:
        return copy.deepcopy(node["default"])
    if node.get("type") == "object" and "properties" in node:
        return {k: d for k, sub in node["properties"].items() if (d := _defaults(sub)) is not _NO_DEFAULT}
    return _NO_DEFAULT


def default(key: str):
    """The schema's default of a dotted key, e.g. ``default("evaluate.peak_threshold")``."""
    node = schema()
    for part in key.split("."):
        node = node["properties"][part]
    return _defaults(node)


def fill_defaults(config: dict) -> dict:
    """``config`` with every key it leaves out set to the schema's default (a new dict; the same
    filling for the workflow, the CLI and the training entry point)."""
    return _fill(schema(), config)


def _fill(node: dict, value):
    # a section (an object without a default of its own) is filled key by key; anything with a default
    # (a value, a list, a tuning grid) is taken whole, so a grid given in a config is never widened
    if not (node.get("type") == "object" and "properties" in node and "default" not in node and isinstance(value, dict)):
        return copy.deepcopy(value)
    out = {k: copy.deepcopy(v) for k, v in value.items()}
    for k, sub in node["properties"].items():
        if k in value:
            out[k] = _fill(sub, value[k])
        elif (d := _defaults(sub)) is not _NO_DEFAULT:
            out[k] = d
    return out


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
    """Read a config file, merge any overlay files on top (later wins), validate the result and fill
    the keys it leaves out with the schema's defaults."""
    config = _read(Path(path))
    for overlay in overlays:
        config = merge(config, _read(Path(overlay)))
    return fill_defaults(validate(config))


def digest(obj) -> str:
    """Short stable hash of a JSON-able object (keys sorted): the one recipe for every fingerprint."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(config: dict, sections=("seed", "source", "prototypes", "selection", "geometry",
                                        "orientations", "simulation", "dataset")) -> str:
    """A short stable hash of the sections that determine the simulated data."""
    return digest({k: config.get(k) for k in sections})
