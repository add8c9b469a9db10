import os
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def default_config() -> dict:
    """A fresh copy of config/config.yaml."""
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
