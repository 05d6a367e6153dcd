"""Remove what an installed virtual environment never runs: test suites and pip's caches.

Run inside an image build right after `pip install`, in the same RUN step, so the files never
reach a layer. Only folders named `tests` / `testing` inside third-party packages go
(numpy, scipy, pandas and scikit-learn ship ~110 MB of them); palm's own code is untouched.
"""

import shutil
import site
import sys
from pathlib import Path

KEEP = {"palm_algos", "evaluation"}
removed = 0
for root in map(Path, site.getsitepackages()):
    if not root.is_dir():
        continue
    for package in root.iterdir():
        if not package.is_dir() or package.name in KEEP or package.name.endswith(".dist-info"):
            continue
        for folder in list(package.rglob("tests")):
            if folder.is_dir():
                removed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
                shutil.rmtree(folder)
print(f"slim: removed {removed / 2**20:.0f} MB of bundled test suites", file=sys.stderr)
