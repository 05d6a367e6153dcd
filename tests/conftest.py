"""Shared fixtures: the real data sets in ../shared/data and a small synthetic PALM example."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from palm_algos.synth import write_palm_example

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"
NO_SHARED = "../shared/data not present (fresh clone outside the workplace)"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data from the repository root); skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(NO_SHARED)
    return SHARED_DATA


def _real(shared_data: Path, relative: str) -> Path:
    folder = shared_data / relative
    if not folder.is_dir():
        pytest.skip(NO_SHARED)
    return folder


@pytest.fixture(scope="session")
def palm224(shared_data) -> Path:
    return _real(shared_data, "palm224/PALM-Training400")


@pytest.fixture(scope="session")
def idrid(shared_data) -> Path:
    return _real(shared_data, "idrid")


@pytest.fixture(scope="session")
def drishti(shared_data) -> Path:
    return _real(shared_data, "drishti-gs1/Training")


@pytest.fixture(scope="session")
def drions(shared_data) -> Path:
    return _real(shared_data, "drions-sample")


@pytest.fixture(scope="session")
def synth_example(tmp_path_factory) -> Path:
    """A PALM-shaped synthetic folder: 8 cases at 256x256 (images/, labels.csv, Disc_Masks/)."""
    return write_palm_example(tmp_path_factory.mktemp("synth") / "example", count=8, size=(256, 256), seed=0)


@pytest.fixture(scope="session")
def cross_validate() -> ModuleType:
    """benchmarks/cross_validate.py, loaded as `python benchmarks/cross_validate.py` runs it
    (beside its sibling module stamp); its command is ``.main``."""
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(benchmarks) not in sys.path:
        sys.path.insert(0, str(benchmarks))
    spec = importlib.util.spec_from_file_location("cross_validate", benchmarks / "cross_validate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
