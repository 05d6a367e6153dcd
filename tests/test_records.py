"""The benchmark records in docs/results/: new ones carry a stamp (date, commit, torch, device,
cores), and benchmarks/results_table.py writes RESULTS.md from stamped and older records alike."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import each other as their folder's modules

import results_table  # noqa: E402
from stamp import describe, stamp  # noqa: E402


def test_stamp_says_when_where_and_from_which_commit():
    pytest.importorskip("torch")
    import torch

    s = stamp()
    assert datetime.fromisoformat(s["date"]).tzinfo is not None
    assert s["torch"] == torch.__version__ and s["cores"] >= 1 and s["device"]
    head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert s["commit"].split("+")[0] == head.stdout.strip()


def test_results_table_shows_stamps_and_copes_with_records_without_one():
    old = {"file": "disc.json"}
    new = {"file": "disc-new.json", "stamp": {"date": "2031-02-03T04:05:06+00:00", "commit": "abcdef1234",
                                              "torch": "2.14.1", "device": "NVIDIA H200", "cores": 16}}
    assert results_table.record_cell(old) == "`disc.json`"
    assert results_table.record_cell(new) == "`disc-new.json` (2031-02-03, abcdef1234, NVIDIA H200 (16 cores), torch 2.14.1)"
    assert describe(old) == ""
    document = results_table.document()  # every record in docs/results/, stamped or not
    assert "`classification.json`" in document and "## Optic disc" in document


def test_the_committed_results_are_what_the_records_and_the_intro_write():
    written = (results_table.RESULTS.parent / "RESULTS.md").read_text()
    assert written == results_table.document(), (
        "docs/RESULTS.md lags docs/RESULTS.intro.md or docs/results/: run python benchmarks/results_table.py --write")
