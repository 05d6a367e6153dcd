"""The dry run of a grand-challenge phase without Docker (docs/CONTAINERS.md), on real
photographs: gc_jobs prepare, serve each job, gc_jobs collect, `palm evaluate --gc`. The model
is untrained: this checks the plumbing (every job's output found, read and scored against
the truth prepare wrote), not the scores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from palm_algos import serve
from palm_algos.cases import read_cases
from palm_cli import main as palm
from test_ensemble import random_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "containers" / "test"))
from gc_jobs import collect, prepare  # noqa: E402


def test_disc_phase_on_drishti_photographs(drishti, tmp_path):
    jobs = prepare(drishti, tmp_path / "jobs", limit=2, truth=tmp_path / "truth")
    source, truth = read_cases(drishti).by_name(), read_cases(tmp_path / "truth").cases
    assert len(jobs) == 2 and len(truth) == 2
    for case in truth:  # the soft maps became PALM masks (0 = disc) of the same disc
        assert case.disc_mask.name == f"{case.name}.bmp"
        assert np.array_equal(case.read_disc(), source[case.name].read_disc())

    model = random_checkpoint(tmp_path / "disc.pt", "disc")
    for job in jobs:
        assert serve.main("disc", ["--input", str(job / "input"), "--output", str(job / "output"),
                                   "--model", str(model)]) == 0
    collect(tmp_path / "jobs", tmp_path / "evaluation-input")
    result = CliRunner().invoke(palm, ["evaluate", "--gc", "--input", str(tmp_path / "evaluation-input"),
                                       "--ground-truth", str(tmp_path / "truth"), "--out", str(tmp_path / "metrics.json")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["aggregates"]["disc"]["n_cases"] == 2 and set(metrics["case"]) == {c.name for c in truth}
