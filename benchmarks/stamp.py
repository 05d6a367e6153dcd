"""The stamp every benchmark record carries: when, from which commit, with which torch, on
which device and how many cores; so that two records that disagree can be told apart.

    from stamp import stamp          # the scripts in benchmarks/ run with this folder on sys.path
    record = {..., "stamp": stamp()}
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit() -> str:
    """The short commit of the checkout, '+changes' where files differ from it; 'unknown'
    outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short=10", "HEAD")
        return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stamp() -> dict:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit(),
            "torch": torch.__version__, "device": device, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def describe(record: dict) -> str:
    """One line for a table: 'date, commit, device, cores, torch'; '' for a record made before
    records were stamped."""
    s = record.get("stamp")
    if not s:
        return ""
    return f"{s['date'][:10]}, {s['commit']}, {s['device']} ({s['cores']} cores), torch {s['torch']}"
