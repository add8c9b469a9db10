"""envs/*.yaml (conda environments per rule family) agree with pyproject.toml and the constraints."""
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))
# Pinned in an env but not a dependency of the package: the GPU stack and conda's own tooling.
ENV_ONLY = {"python", "pip", "cuda-version", "cupy"}
# What each rule family imports (so a rule run in its env finds its libraries).
NEEDS = {
    "crystals": {"pymatgen", "ase", "mp-api", "pandas", "pyarrow", "pyyaml", "jsonschema"},
    "simulate": {"abtem", "cupy", "zarr", "numcodecs", "pymatgen", "ase", "pandas", "pyarrow", "matplotlib"},
    "train": {"torch", "py4dstem", "zarr", "pandas", "pyarrow", "matplotlib", "rosettasciio", "pymatgen",
              "hdf5plugin"},
}


def _pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = {canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in data["dependencies"]}
    return reqs, SpecifierSet(data["requires-python"])


def _constraints():
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)$", line.strip())
        if m:
            pins[canonicalize_name(m.group(1))] = Version(m.group(2))
    return pins


def _pins(env_file):
    """(name, version or None) for every conda and pip entry of an env file."""
    env = yaml.safe_load(env_file.read_text())
    out = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                if line.startswith("-"):
                    continue  # an option (index URL), not a package
                r = Requirement(line)
                pinned = [s.version for s in r.specifier if s.operator == "=="]
                out.append((canonicalize_name(r.name), Version(pinned[0]) if pinned else None))
        else:
            name, _, version = dep.partition("=")
            out.append((canonicalize_name(name), Version(version.lstrip("=")) if version else None))
    return out


def test_env_files_exist_for_each_rule_family():
    assert {p.stem for p in ENVS} >= set(NEEDS)


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.stem)
def test_env_pins_agree_with_pyproject_and_constraints(env_file):
    reqs, requires_python = _pyproject()
    pins = _constraints()
    seen = set()
    for name, version in _pins(env_file):
        seen.add(name)
        if name == "python":
            assert version is not None and requires_python.contains(f"{version}.0"), \
                f"{env_file.name}: python {version} outside requires-python {requires_python}"
            continue
        if name in ENV_ONLY:
            continue
        assert name in reqs or name in pins, f"{env_file.name}: {name} is neither a dependency nor constrained"
        assert version is not None, f"{env_file.name}: {name} is not pinned"
        if name in reqs:
            assert reqs[name].contains(version, prereleases=True), \
                f"{env_file.name}: {name} {version} violates pyproject's {reqs[name]}"
        if name in pins:
            # conda versions may carry fewer components (13.6 for 13.6.0): compare as versions
            assert version == pins[name], f"{env_file.name}: {name} {version} but constraints pin {pins[name]}"
    missing = NEEDS.get(env_file.stem, set()) - seen
    assert not missing, f"{env_file.name} lacks {sorted(missing)} that its rules import"


def test_gpu_envs_carry_the_gpu_stack():
    simulate = dict(_pins(ROOT / "envs" / "simulate.yaml"))
    assert "cupy" in simulate and "cuda-version" in simulate
    train = yaml.safe_load((ROOT / "envs" / "train.yaml").read_text())
    pip = next(d["pip"] for d in train["dependencies"] if isinstance(d, dict))
    # CUDA wheels of torch come from the PyTorch index, never PyPI's default build
    assert any("download.pytorch.org/whl/cu" in line for line in pip)


def test_rules_name_existing_envs():
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for m in re.finditer(r"^\s*conda:\s*\n\s*\"([^\"]+)\"", smk.read_text(), flags=re.M):
            assert (smk.parent / m.group(1)).resolve().exists(), f"{smk.name}: conda env {m.group(1)} missing"
