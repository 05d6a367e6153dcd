"""`palm data inspect` and `palm data synth` through the real command line."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from palm_algos.cases import read_cases, summarise
from palm_algos.cli import main


def palm(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result


def test_inspect_real_idrid(idrid):
    result = palm("data", "inspect", idrid, "--json")
    assert result.exit_code == 0
    summary = json.loads(result.output)
    assert (summary["layout"], summary["cases"], summary["with_fovea"], summary["problems"]) == ("idrid", 69, 69, 0)


def test_inspect_synth_example(synth_example):
    result = palm("data", "inspect", synth_example)
    assert result.exit_code == 0
    assert "cases            8" in result.output and "disc masks       8" in result.output
    assert "problems         0" in result.output


def test_inspect_empty_folder_is_one_error_line(tmp_path):
    result = palm("data", "inspect", tmp_path)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "no usable images" in result.output
    assert result.output.count("\n") == 1
    result = palm("data", "inspect", tmp_path / "nowhere")
    assert result.exit_code == 1 and "no such folder" in result.output


def test_inspect_lists_every_problem(tmp_path):
    for name in ("P0001", "P0002", "N0003"):
        Image.fromarray(np.full((300, 400, 3), 80, np.uint8)).save(tmp_path / f"{name}.jpg")
    data = (tmp_path / "P0002.jpg").read_bytes()
    (tmp_path / "P0002.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "clip.doc").write_bytes(b"not an image")
    (tmp_path / "labels.csv").write_text("imgName,Label\nP0001.jpg,1\nN0003.jpg,7\nX0009.jpg,0\n")
    result = palm("data", "inspect", tmp_path, "--decode")
    assert result.exit_code == 0
    lines = [line.strip() for line in result.output.splitlines()]
    assert "cases            2" in result.output and "problems         5" in result.output
    for words in ("clip.doc: skipped, unsupported", "N0003): Label must be 0 or 1", "'X0009' names no image",
                  "no row for 1 image(s): P0002", "P0002.jpg: cannot read image (image file is truncated"):
        assert sum(words in line for line in lines) == 1, (words, result.output)
    without = palm("data", "inspect", tmp_path, "--json")
    assert json.loads(without.output)["cases"] == 3  # without --decode the header passes


def test_synth_is_deterministic_and_any_size(tmp_path):
    for out in ("a", "b"):
        assert palm("data", "synth", tmp_path / out, "--count", 16, "--size", "300x200", "--seed", 3).exit_code == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 33
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    palm("data", "synth", tmp_path / "c", "--count", 2, "--size", "300x200", "--seed", 4)
    first = sorted((tmp_path / "a" / "images").iterdir())[0]
    assert first.read_bytes() != sorted((tmp_path / "c" / "images").iterdir())[0].read_bytes()

    table = read_cases(tmp_path / "a", check_images=True)
    assert table.problems == [] and summarise(table)["sizes"] == {"300x200": 16}
    assert sum(c.label == 1 for c in table.cases) == 8
    for i, case in enumerate(sorted(table.cases, key=lambda c: int(c.name[1:]))):
        assert case.label == i % 2
        disc = case.read_disc()
        assert disc.shape == (200, 300)
        assert disc.any() == (i % 12 != 11), case.name
        if i % 16 == 15:
            assert case.fovea is None and case.fovea_absent
        elif case.fovea is not None:
            assert 0 <= case.fovea[0] < 300 and 0 <= case.fovea[1] < 200
    assert sum(c.fovea is not None for c in table.cases) >= 12


def test_synth_bad_arguments_are_errors(tmp_path):
    result = palm("data", "synth", tmp_path / "x", "--size", "big")
    assert result.exit_code == 2 and "expected WxH" in result.output
    result = palm("data", "synth", tmp_path / "x", "--size", "16x16")
    assert result.exit_code == 1 and "Error: synthetic images need both sides >= 32 px" in result.output
    result = palm("data", "synth", tmp_path / "x", "--count", 0)
    assert result.exit_code == 1 and "Error: count must be at least 1" in result.output
