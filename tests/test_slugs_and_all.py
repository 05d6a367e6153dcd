"""Output slugs set at build time, the evaluation's kind-based lookup of each task's output, and
the all-tasks entry point (palm-all) with a stand-in predictor. Fast: no docker, no torch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from evaluation.gc import main as gc_main
from evaluation.submission import choose_slugs, read_gc_submission
from evaluation.validation import Report
from palm_algos import serve
from palm_algos.formats import OUTPUT_SLUGS
from test_evaluation import gc_truth, make_gc_input, truth  # noqa: F401  (fixture)
from test_serve import fake_loader, gc_input, rgb

RENAMED = {"classification": "pm-likelihood", "fovea": "fovea-location", "disc": "disc-mask"}


def job(outputs: list[tuple[str, str]]) -> dict:
    return {"pk": "job-0", "inputs": [{"image": {"name": "P0001.png"}}],
            "outputs": [{"interface": {"slug": slug, "kind": kind, "relative_path": f"{slug}.json"}} for slug, kind in outputs]}


def choose(outputs, given=None):
    report = Report()
    return choose_slugs([job(outputs)], given or {}, report), report


# -- the evaluation: which output is which ----------------------------------------------------------


def test_default_slugs_need_no_kind():
    chosen, report = choose([(s, "") for s in OUTPUT_SLUGS.values()])
    assert chosen == OUTPUT_SLUGS and not report.errors and not report.warnings


def test_other_slugs_found_by_kind_with_a_warning():
    chosen, report = choose([("pm-likelihood", "Float"), ("fovea-location", "Point"), ("disc-mask", "Segmentation")])
    assert chosen == RENAMED and not report.errors
    assert len(report.warnings) == 3 and all("found by its kind" in w for w in report.warnings)


def test_kinds_as_codes_any_case_and_image_for_the_disc():
    chosen, report = choose([("a", "FLT"), ("b", "2D point"), ("c", "image")])
    assert chosen == {"classification": "a", "fovea": "b", "disc": "c"} and not report.errors


def test_segmentation_preferred_over_image_for_the_disc():
    chosen, report = choose([("heat", "Image"), ("mask", "Segmentation")])
    assert chosen == {"disc": "mask"}
    assert any("not scored: heat" in w for w in report.warnings)


def test_two_floats_cannot_be_told_apart():
    chosen, report = choose([("risk-a", "Float"), ("risk-b", "Float"), ("fovea", "Point")])
    assert chosen is None and len(report.errors) == 1
    line = report.errors[0]
    assert "\n" not in line and "risk-a, risk-b" in line and "--classification-slug" in line
    assert "fovea (point)" in line  # every slug seen is named


def test_a_given_slug_decides_and_the_default_beats_a_kind():
    chosen, report = choose([("risk-a", "Float"), ("risk-b", "Float")], {"classification": "risk-b"})
    assert chosen == {"classification": "risk-b"} and not report.errors
    chosen, _ = choose([("other", "Float"), (OUTPUT_SLUGS["classification"], "Float")])
    assert chosen == {"classification": OUTPUT_SLUGS["classification"]}


def test_a_given_slug_that_is_absent_is_an_error_not_a_skip():
    chosen, report = choose([("fovea", "Point")], {"classification": "nope"})
    assert chosen is None and "'nope'" in report.errors[0] and "fovea (point)" in report.errors[0]


def test_no_output_of_any_kind_names_the_slugs_seen(tmp_path):
    (tmp_path / "predictions.json").write_text(json.dumps([job([("notes", "String")])]))
    sub = read_gc_submission(tmp_path)
    assert not sub.tasks() and len(sub.report.errors) == 1 and "notes (string)" in sub.report.errors[0]


def rename_outputs(inp: Path, renamed: dict[str, str]) -> None:
    """Give the jobs of make_gc_input other slugs, files moved to match (as another phase would)."""
    jobs = json.loads((inp / "predictions.json").read_text())
    old_new = {OUTPUT_SLUGS[t]: s for t, s in renamed.items()}
    for entry in jobs:
        out = inp / entry["pk"] / "output"
        for output in entry["outputs"]:
            face = output["interface"]
            old, new = face["slug"], old_new.get(face["slug"], face["slug"])
            relative = face["relative_path"].replace(old, new)
            (out / face["relative_path"]).rename(out / relative)
            face.update(slug=new, relative_path=relative)
    (inp / "predictions.json").write_text(json.dumps(jobs))


def test_evaluation_scores_renamed_outputs_by_kind(truth, tmp_path):  # noqa: F811
    gt = gc_truth(truth)
    inp = make_gc_input(tmp_path / "input", gt)
    rename_outputs(inp, RENAMED)
    assert gc_main(["--input", str(inp), "--ground-truth", str(gt), "--output", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(data["aggregates"]) == {"classification", "fovea", "disc"}
    assert data["aggregates"]["disc"]["mean_dice"] == 1.0
    assert any("'fovea-location' found by its kind" in w for w in data["warnings"])


def test_evaluation_fails_in_one_line_on_two_floats(truth, tmp_path, capsys):  # noqa: F811
    gt = gc_truth(truth)
    inp = make_gc_input(tmp_path / "input", gt)
    rename_outputs(inp, {"classification": "pm-a"})
    jobs = json.loads((inp / "predictions.json").read_text())
    for entry in jobs:
        entry["outputs"].append({"interface": {"slug": "pm-b", "kind": "Float", "relative_path": "pm-b.json"}, "value": 0.5})
    (inp / "predictions.json").write_text(json.dumps(jobs))
    assert gc_main(["--input", str(inp), "--ground-truth", str(gt), "--output", str(tmp_path / "out")]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("Invalid submission: cannot tell which output is the classification")
    assert "pm-a, pm-b" in last and "fovea (point)" in last and "optic-disc-segmentation (segmentation)" in last
    assert gc_main(["--input", str(inp), "--ground-truth", str(gt), "--output", str(tmp_path / "out"),
                    "--classification-slug", "pm-a"]) == 0


# -- the algorithm side: slugs from the image's environment ------------------------------------------


def test_build_time_slug_environment(monkeypatch):
    for task in serve.TASKS:
        monkeypatch.delenv(serve.ENV_TASK_SLUGS[task], raising=False)
    monkeypatch.delenv(serve.ENV_OUTPUT_SLUG, raising=False)
    assert serve.default_output_slug("fovea") == "fovea"
    monkeypatch.setenv("PALM_FOVEA_SLUG", "fovea-location")
    assert serve.default_output_slug("fovea") == "fovea-location"
    monkeypatch.setenv("PALM_DISC_SLUG", "")  # an empty build argument: the default
    assert serve.default_output_slug("disc") == "optic-disc-segmentation"
    monkeypatch.setenv("PALM_OUTPUT_SLUG", "x")  # run-time override of a one-task image wins
    assert serve.default_output_slug("fovea") == "x"
    monkeypatch.delenv("PALM_OUTPUT_SLUG")
    args = serve.parse_args(serve.ALL, [])
    assert args.slugs == {"classification": "pathologic-myopia-likelihood", "fovea": "fovea-location",
                          "disc": "optic-disc-segmentation"}
    assert serve.parse_args(serve.ALL, ["--disc-slug", "m"]).slugs["disc"] == "m"


@pytest.mark.parametrize("slugs, match", [({"disc": "../etc"}, "letters, digits"),
                                          ({"fovea": "a", "disc": "a"}, "must differ")])
def test_unsafe_or_clashing_slugs_refused(slugs, match):
    with pytest.raises(serve.ServeError, match=match):
        serve.check_slugs("color-fundus-image", slugs)


def all_models(root: Path) -> Path:
    root.mkdir()
    for task in serve.TASKS:
        (root / f"{task}.pt").write_bytes(b"fake")
    return root


def test_all_named_checkpoints_only(tmp_path):
    mounted, baked = tmp_path / "ml", all_models(tmp_path / "app")
    mounted.mkdir()
    (mounted / "fovea.pt").write_bytes(b"")  # a model tarball with one task's checkpoint
    search = (mounted, baked)
    assert serve.find_checkpoint("fovea", search=search, named=True) == mounted / "fovea.pt"
    assert serve.find_checkpoint("disc", search=search, named=True) == baked / "disc.pt"
    with pytest.raises(serve.ServeError, match="disc.pt"):
        serve.find_checkpoint("disc", search=(mounted,), named=True)
    with pytest.raises(serve.ServeError, match="needs a model folder"):
        serve.find_checkpoint("disc", mounted / "fovea.pt", named=True)


def test_all_gc_job_writes_every_output_under_its_slug(tmp_path, monkeypatch):
    inp, out = tmp_path / "in", tmp_path / "out"
    gc_input(inp, slug="fundus-photo")
    for task, slug in RENAMED.items():
        monkeypatch.setenv(serve.ENV_TASK_SLUGS[task], slug)
    monkeypatch.setenv(serve.ENV_INPUT_SLUG, "fundus-photo")
    calls = []
    code = serve.main(serve.ALL, ["--input", str(inp), "--output", str(out), "--model", str(all_models(tmp_path / "m"))],
                      load=fake_loader(calls))
    assert code == 0
    assert [c.name for c in calls] == [f"{t}.pt" for t in serve.TASKS]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["fovea-location.json", "images/disc-mask/output.mha", "pm-likelihood.json"]
    assert json.loads((out / "pm-likelihood.json").read_text()) == 0.25
    assert json.loads((out / "fovea-location.json").read_text())["name"] == "fovea-location"


def test_all_gc_job_hands_the_fovea_models_disc_centre_to_the_disc_model(tmp_path):
    """As in batch mode, the disc model of a palm-all job heeds where the joint fovea model put
    the disc (``Predictor.predict_with_disc``); the classification is told nothing."""
    inp, out = tmp_path / "in", tmp_path / "out"
    gc_input(inp)
    real, heard = fake_loader(), {}

    def load(task, checkpoint):
        predictor = real(task, checkpoint)
        answer = predictor.predict_with_disc

        def predict_with_disc(image, photo=None, disc=None):
            heard[task] = disc
            value, _ = answer(image, photo, disc)
            return value, (12.0, 7.5) if task == "fovea" else None

        predictor.predict_with_disc = predict_with_disc
        return predictor

    code = serve.main(serve.ALL, ["--input", str(inp), "--output", str(out), "--model", str(all_models(tmp_path / "m"))],
                      load=load)
    assert code == 0
    assert heard == {"classification": None, "fovea": None, "disc": (12.0, 7.5)}


def test_all_gc_one_task_failing_keeps_the_others(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    gc_input(inp)
    real = fake_loader()

    def load(task, checkpoint):
        if task == "fovea":
            raise serve.ServeError("fovea.pt: not a fovea checkpoint")
        return real(task, checkpoint)

    code = serve.main(serve.ALL, ["--input", str(inp), "--output", str(out), "--model", str(all_models(tmp_path / "m"))],
                      load=load)
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("palm-all: error: fovea failed")
    assert (out / "pathologic-myopia-likelihood.json").is_file()
    assert (out / "images" / "optic-disc-segmentation" / "output.mha").is_file()


def test_all_batch_writes_every_palm_file(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    for name in ("P0001", "N0002"):
        Image.fromarray(rgb()).save(inp / f"{name}.png")
    (inp / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 16)
    code = serve.main(serve.ALL, ["--input", str(inp), "--output", str(out), "--model", str(all_models(tmp_path / "m"))],
                      load=fake_loader())
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("palm-all: classification 2 of 3, fovea 2 of 3, disc 2 of 3 images predicted")
    assert err[-1].endswith("3 failed (listed above)")
    assert sum("broken.jpg" in line for line in err[:-1]) == 3
    for name, columns in (("Classification_Results.csv", 2), ("Fovea_Localization_Results.csv", 3)):
        rows = list(csv.reader((out / name).open()))
        assert len(rows) == 3 and all(len(r) == columns for r in rows)
    assert sorted(p.name for p in (out / "Disc_Segmentation").glob("*.bmp")) == ["N0002.bmp", "P0001.bmp"]
