import pytest

from fourdcrystal import config as cfgmod
from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry, electron_wavelength_A

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_is_valid(default_config):
    cfgmod.validate(default_config)
    g = Geometry.from_config(default_config)
    assert g.dk_invA == pytest.approx(1 / default_config["geometry"]["box_A"])
    assert g.center_px == default_config["geometry"]["detector_px"] // 2


def test_bad_key_names_the_key(default_config):
    default_config["simulation"]["qz_sigma_invA"] = -1
    with pytest.raises(UserError, match="simulation.qz_sigma_invA"):
        cfgmod.validate(default_config)


def test_unknown_key_is_rejected(default_config):
    default_config["selection"]["n_crystal"] = 3
    with pytest.raises(UserError, match="n_crystal"):
        cfgmod.validate(default_config)


def test_detector_beyond_band_limit_is_rejected(default_config):
    default_config["geometry"]["gpts"] = 128  # detector 128 px needs a finer grid
    with pytest.raises(UserError, match="raise gpts"):
        cfgmod.validate(default_config)


def test_wavelength():
    assert electron_wavelength_A(200e3) == pytest.approx(0.02508, rel=1e-3)
    assert electron_wavelength_A(300e3) == pytest.approx(0.01969, rel=1e-3)


def test_geometry_roundtrip(default_config):
    g = Geometry.from_config(default_config)
    assert Geometry.from_dict(g.to_dict()) == g


def test_workflow_rejects_bad_config_with_one_line(tmp_path):
    """`snakemake` itself stops on a bad key with our one-line message, before any job runs."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    snakemake = Path(sys.executable).with_name("snakemake")
    bad = tmp_path / "bad.yaml"
    bad.write_text("geometry:\n  detector_px: 8\n")
    proc = subprocess.run([str(snakemake), "-n", "--configfile", "config/config.yaml", str(bad)], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("config key 'geometry.detector_px'")]
    assert len(lines) == 1 and "— fix:" in lines[0], proc.stdout + proc.stderr


# --- the schema is the one owner of every key ------------------------------------------------------
def _leaves(node, path=""):
    """(dotted key, schema node) of every key that is not a section."""
    for k, sub in node.get("properties", {}).items():
        key = f"{path}.{k}" if path else k
        if sub.get("type") == "object" and "properties" in sub and "default" not in sub:
            yield from _leaves(sub, key)
        elif sub.get("type") == "object" and "properties" in sub:  # a tuning grid: its keys are the leaves
            yield key, sub
            yield from _leaves(sub, key)
        else:
            yield key, sub


def _readme_rows():
    import re

    rows, section = {}, None
    for line in (ROOT / "config" / "README.md").read_text().splitlines():
        if line.startswith("### "):
            m = re.match(r"^### `(\w+)`", line)
            section = m.group(1) if m else ""
            continue
        m = re.match(r"^\| `([\w.]+)` \| (.*?) \| (.*) \|$", line)
        if m and section is not None:
            rows[f"{section}.{m.group(1)}" if section else m.group(1)] = m.group(2)
    return rows


def test_every_schema_key_has_type_default_and_description():
    for key, node in _leaves(cfgmod.schema()):
        if ".grid." in key:  # grid values: typed and described; the grid itself has the default
            assert "description" in node and node.get("type") == "array", key
            continue
        assert "description" in node and node["description"], f"{key}: no description"
        assert "default" in node, f"{key}: no default"
        assert "type" in node or "enum" in node or "$ref" in node, f"{key}: no type"


def _as_numbers(v):
    """'1e4' (YAML 1.1 reads it as text), 10000 and 10000.0 compare equal."""
    if isinstance(v, list):
        return [_as_numbers(x) for x in v]
    if isinstance(v, bool) or v is None:
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def test_config_readme_tables_and_schema_agree():
    import yaml

    all_leaves = dict(_leaves(cfgmod.schema()))
    leaves = {k: n for k, n in all_leaves.items() if not k.endswith(".grid")}
    for key in leaves:  # a grid key's default: its entry in the grid's default ("—": not in it)
        grid, _, name = key.rpartition(".")
        if grid.endswith(".grid") and name in all_leaves[grid]["default"]:
            leaves[key] = {**leaves[key], "default": all_leaves[grid]["default"][name]}
    rows = _readme_rows()
    assert set(rows) == set(leaves), (set(rows) ^ set(leaves))
    for key, text in rows.items():
        if "default" not in leaves[key] or text == "—":
            assert "default" not in leaves[key] and text == "—", key
            continue
        try:
            value = yaml.safe_load(text.strip("`"))
        except yaml.YAMLError:
            continue  # prose (e.g. "noble gases, radioactive")
        if isinstance(value, str) and " " in value:
            continue
        assert _as_numbers(value) == _as_numbers(leaves[key]["default"]), (key, text, leaves[key]["default"])


def test_config_yaml_holds_exactly_the_schema_defaults():
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert cfgmod.fill_defaults({}) == cfg


@pytest.mark.parametrize("path", [("evaluate", "classical", "minPeakSpacng"), ("train", "epoch"),
                                  ("evaluate", "tune_classical", "grid", "sigmaa"), ("geometry", "box")])
def test_a_misspelt_key_anywhere_fails_naming_it(path):
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    node = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = 1
    with pytest.raises(UserError, match=path[-1]):
        cfgmod.validate(cfg)
