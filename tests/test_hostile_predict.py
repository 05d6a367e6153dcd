"""Hostile inputs against the algorithm side: `palm predict` and the containers' entry point
(palm_algos.serve) in PALM batch mode and grand-challenge mode (issue 13, items 1-9).

Every case asserts the same contract: the exit status; one line that names the file and the
problem; no traceback; every other output intact (the good images' rows and masks are still
written, and nothing half-written is left where a run is refused). The cases are listed, with
what the user sees, in docs/HOSTILE_INPUTS.md ("Algorithms").

The models are random tiny-input checkpoints of the real architectures (as in
tests/test_ensemble.py); runs that need an unreadable folder or a read-only output are run as
an unprivileged user (``setpriv``) when the tests run as root, where permissions do not bind.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from palm_algos import serve
from palm_algos.checkpoint import save_checkpoint
from palm_algos.cli import main as palm
from palm_algos.formats import CSV_NAMES as CSV
from palm_algos.imageio import write_mha_image
from palm_algos.predict import Predictor
from palm_algos.tasks import IMAGENET_MEAN, IMAGENET_STD, get_task

REPO = Path(__file__).resolve().parents[1]
ARCHS = {"classification": "resnet50", "fovea": "resnet50", "disc": "resnet34-aspp-unet"}
GOOD = ("P0001.jpg", "N0002.png")  # the good images every batch folder holds


# -- fixtures: world-readable scratch folders and tiny checkpoints ---------------------------------


@pytest.fixture(scope="session")
def scratch():
    """A world-readable temporary folder (pytest's own is 0700: an unprivileged run needs more)."""
    folder = Path(tempfile.mkdtemp(prefix="palm-hostile-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def random_checkpoint(path: Path, task: str, input_size: int = 64, poison: float | None = None, **meta_changes) -> Path:
    """A random (untrained) model of the task's architecture; ``poison`` fills the last layer's
    bias with that value (NaN, inf) so that every output is non-finite."""
    torch.manual_seed(0)
    model = get_task(task).build_model(ARCHS[task], pretrained="none").eval()
    state = model.state_dict()
    if poison is not None:
        last_bias = [k for k in state if k.endswith("bias") and state[k].is_floating_point()][-1]
        state[last_bias] = torch.full_like(state[last_bias], poison)
    meta = {"task": task, "arch": ARCHS[task], "input_size": input_size, "zoom": 1,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), **meta_changes}
    save_checkpoint(path, state, meta)
    path.chmod(0o644)
    return path


@pytest.fixture(scope="session")
def ckpts(scratch) -> dict[str, Path]:
    folder = scratch / "models"
    folder.mkdir()
    folder.chmod(0o755)
    return {task: random_checkpoint(folder / f"{task}.pt", task) for task in ARCHS}


@pytest.fixture(scope="session")
def poisoned(scratch) -> dict[str, Path]:
    folder = scratch / "poisoned"
    folder.mkdir()
    found = {f"{task}-nan": random_checkpoint(folder / f"{task}-nan.pt", task, poison=float("nan")) for task in ARCHS}
    found["classification-inf"] = random_checkpoint(folder / "classification-inf.pt", "classification", poison=float("inf"))
    return found


@pytest.fixture
def cached_models(monkeypatch):
    """The real Predictor, loaded once per checkpoint (these cases are about the images)."""
    loaded: dict = {}
    original = Predictor.load.__func__

    def load(cls, checkpoint, task=None, device=None, tta=None):
        key = (str(checkpoint), task, tta)
        if key not in loaded:
            loaded[key] = original(cls, checkpoint, task=task, device=device, tta=tta)
        return loaded[key]

    monkeypatch.setattr(Predictor, "load", classmethod(load))
    return loaded


# -- running the two entry points ------------------------------------------------------------------


@dataclass
class Run:
    code: int | None  # None: an exception escaped
    text: str  # stdout + stderr (+ the traceback of an escaped exception)

    def lines_with(self, *needles: str) -> list[str]:
        return [line for line in self.text.splitlines() if all(n in line for n in needles)]


def palm_predict(task: str, inp: Path, out: Path, model: Path | None, *extra: str) -> Run:
    args = ["predict", task, "--input", str(inp), "--output", str(out), *extra]
    if model is not None:
        args += ["--model", str(model)]
    result = CliRunner().invoke(palm, args)
    text = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        text += "\n" + "".join(traceback.format_exception(result.exception))
        return Run(None, text)
    return Run(result.exit_code, text)


def serve_main(task: str, inp: Path, out: Path, model: Path | None, *extra: str) -> Run:
    args = ["--input", str(inp), "--output", str(out), *extra]
    if model is not None:
        args += ["--model", str(model)]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            code = serve.main(task, args)
        except Exception:  # noqa: BLE001 - the test reports it as the traceback a user would see
            return Run(None, buffer.getvalue() + traceback.format_exc())
    return Run(code, buffer.getvalue())


ENTRIES = {"palm-predict": palm_predict, "serve": serve_main}


def unprivileged(args: list[str], cwd: Path) -> Run:
    """``python -m palm_algos.<args>`` as a user that permissions bind (``nobody`` when root)."""
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot test permissions")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {**os.environ, "HOME": str(cwd), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO)}
    if prefix and subprocess.run([*prefix, sys.executable, "-c", "import palm_algos.cli"], cwd=cwd, env=env,
                                 capture_output=True, timeout=120).returncode != 0:
        pytest.skip(f"the unprivileged user cannot read this checkout ({REPO}) or its Python: "
                    "cannot test permissions here")
    proc = subprocess.run([*prefix, sys.executable, "-m", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, errors="backslashreplace", timeout=600)
    return Run(proc.returncode, proc.stdout + proc.stderr)


def assert_clean(run: Run, code: int, name: str, problem: str) -> str:
    """Exit status ``code``, no traceback, and one line naming ``name`` and ``problem``."""
    assert run.code is not None and "Traceback" not in run.text, run.text
    assert run.code == code, run.text
    found = run.lines_with(name, problem)
    assert found, f"no line names {name!r} and {problem!r}:\n{run.text}"
    return found[0]


def csv_rows(out: Path, task: str) -> dict[str, list[str]]:
    with open(out / CSV[task], newline="", encoding="utf-8") as f:  # strict UTF-8: what an evaluator reads
        rows = list(csv.reader(f))
    assert rows[0][0] == "FileName"
    return {row[0]: row[1:] for row in rows[1:]}


def assert_outputs(out: Path, task: str, names: set[str]) -> None:
    """The predictions of exactly ``names`` are written (and every value is a finite number)."""
    if task in CSV:
        rows = csv_rows(out, task)
        assert set(rows) == names
        assert all(np.isfinite(float(v)) for row in rows.values() for v in row)
    else:
        masks = {p.stem for p in (out / "Disc_Segmentation").glob("*.bmp")}
        assert masks == {Path(n).stem for n in names}


def nothing_written(out: Path) -> bool:
    return not out.exists() or not any(p.is_file() for p in out.rglob("*"))


# -- hostile files -------------------------------------------------------------------------------


def fundus(w: int = 64, h: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def good_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(fundus()).save(root / GOOD[0])
    Image.fromarray(fundus(seed=1)).save(root / GOOD[1])
    return root


def mha_header(**fields) -> bytes:
    base = {"ObjectType": "Image", "NDims": "2", "BinaryData": "True", "BinaryDataByteOrderMSB": "False",
            "CompressedData": "False", "DimSize": "8 8", "ElementNumberOfChannels": "3",
            "ElementType": "MET_UCHAR"}
    base.update({k: v for k, v in fields.items() if k != "ElementDataFile"})
    base["ElementDataFile"] = fields.get("ElementDataFile", "LOCAL")  # always the last line
    return "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None).encode()


def mha_zeroed(path: Path) -> None:
    """A compressed .mha whose compressed pixel data has 64 bytes zeroed in the middle."""
    write_mha_image(fundus(96, 96), path)
    data = bytearray(path.read_bytes())
    start = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    middle = start + (len(data) - start) // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))


def mha_cut(path: Path) -> None:
    """A compressed .mha cut short inside its pixel data."""
    write_mha_image(fundus(96, 96), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])


def mha_raw_short(path: Path) -> None:
    path.write_bytes(mha_header(DimSize="64 64") + bytes(100))


def mha_huge(path: Path) -> None:
    """About 200 bytes that declare 20000 x 20000 x 3 = 1.2 GB of pixels (4.9 GB as floats)."""
    path.write_bytes(mha_header(DimSize="20000 20000", ElementType="MET_FLOAT", CompressedData="True") + b"x\x9c")


def mha_bomb(path: Path) -> None:
    """Declares 8 x 8 pixels, but its compressed data inflates to 256 MB."""
    bomb = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    data = b"".join(bomb.compress(chunk) for _ in range(256)) + bomb.flush()
    path.write_bytes(mha_header(CompressedData="True", CompressedDataSize=str(len(data))) + data)


def mha_points_outside(path: Path, target: str | None = None) -> None:
    """An .mha header whose ElementDataFile names a file outside the image's folder."""
    secret = path.parent.parent / "secret.raw"
    secret.write_bytes(bytes(range(192)))
    path.write_bytes(mha_header(ElementDataFile=target or f"../{secret.name}"))


def mha_absolute(path: Path) -> None:
    mha_points_outside(path, str(path.parent.parent / "secret.raw"))


def mha_garbage(path: Path) -> None:
    Image.fromarray(fundus()).save(path, format="JPEG")  # a JPEG named .mha


def mha_bad_type(path: Path) -> None:
    path.write_bytes(mha_header(ElementType="MET_QUATERNION") + bytes(192))


def mha_volume(path: Path) -> None:
    path.write_bytes(mha_header(NDims="3", DimSize="8 8 5") + bytes(8 * 8 * 5 * 3))


def mha_list(path: Path) -> None:
    path.write_bytes(mha_header(ElementDataFile="LIST") + b"a.raw\nb.raw\n")


def png_bomb(path: Path) -> None:
    """A 1-bit PNG of 30000 x 30000 pixels: a few hundred KB that decode to 900 M pixels."""
    Image.new("1", (30000, 30000)).save(path)


def tif_bomb(path: Path) -> None:
    """A TIFF header declaring 100000 x 100000 RGB pixels over a few bytes of data."""
    import struct

    entries = [(256, 4, 1, 100000), (257, 4, 1, 100000), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, 100000), (279, 4, 1, 10**10 % 2**32)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    path.write_bytes(b"II*\0" + struct.pack("<I", 16) + bytes(8) + ifd)


def fifo(path: Path) -> None:
    os.mkfifo(path)


@dataclass
class Case:
    """One hostile thing added to a folder of good images (PALM batch mode)."""

    id: str
    make: Callable[[Path], None]  # gets the input folder
    name: str  # how the line names the file
    problem: str  # what the line says
    code: int = 1  # 1: a failure; 0: reported as skipped (or handled) without failing the run
    extra: tuple[str, ...] = ()  # further names that must be predicted


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def _jpeg(folder: Path, name: str) -> None:
    Image.fromarray(fundus(seed=3)).save(folder / name, format="JPEG")


def _truncated_jpeg(folder: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(fundus(256, 256)).save(buffer, format="JPEG", quality=95)
    (folder / "half.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def _linked_folder(folder: Path) -> None:
    elsewhere = folder.parent / "elsewhere"
    elsewhere.mkdir()
    _jpeg(elsewhere, "V0009.jpg")
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)


def _loop(folder: Path) -> None:
    (folder / "sub").mkdir()
    _jpeg(folder / "sub", "V0008.jpg")
    (folder / "sub" / "back").symlink_to(folder, target_is_directory=True)


def _duplicate(folder: Path) -> None:
    (folder / "again").mkdir()
    Image.fromarray(fundus()).save(folder / "again" / "P0001.png")


def _folder_named_like_image(folder: Path) -> None:
    (folder / "album.jpg").mkdir()
    _jpeg(folder / "album.jpg", "V0007.jpg")


BATCH_CASES = [
    Case("truncated-jpeg", _truncated_jpeg, "half.jpg", "cannot read image"),
    Case("empty-file", _write("empty.png", b""), "empty.png", "cannot read image"),
    Case("text-named-jpg", _write("notes.jpg", b"meeting notes, not a photograph\n"), "notes.jpg", "cannot read image"),
    Case("png-pixel-bomb", lambda f: png_bomb(f / "bomb.png"), "bomb.png", "too large"),
    Case("tif-pixel-bomb", lambda f: tif_bomb(f / "bomb.tif"), "bomb.tif", "too large"),
    Case("mha-header-20000x20000", lambda f: mha_huge(f / "huge.mha"), "huge.mha", "too large"),
    Case("mha-zeroed-compressed-bytes", lambda f: mha_zeroed(f / "zeroed.mha"), "zeroed.mha", "corrupt"),
    Case("mha-compressed-cut-short", lambda f: mha_cut(f / "cut.mha"), "cut.mha", "truncated"),
    Case("mha-raw-cut-short", lambda f: mha_raw_short(f / "short.mha"), "short.mha", "truncated"),
    Case("mha-inflates-past-its-size", lambda f: mha_bomb(f / "bomb.mha"), "bomb.mha", "more pixel data"),
    Case("mha-data-file-outside", lambda f: mha_points_outside(f / "peek.mha"), "peek.mha", "ElementDataFile"),
    Case("mha-data-file-absolute", lambda f: mha_absolute(f / "abs.mha"), "abs.mha", "ElementDataFile"),
    Case("mha-data-file-list", lambda f: mha_list(f / "list.mha"), "list.mha", "ElementDataFile"),
    Case("mha-not-metaimage", lambda f: mha_garbage(f / "photo.mha"), "photo.mha", "not a MetaImage"),
    Case("mha-unknown-element-type", lambda f: mha_bad_type(f / "quat.mha"), "quat.mha", "ElementType"),
    Case("mha-3d-volume", lambda f: mha_volume(f / "volume.mha"), "volume.mha", "3-D"),
    Case("broken-link", lambda f: (f / "gone.jpg").symlink_to(f / "missing.jpg"), "gone.jpg", "broken link"),
    Case("fifo-named-jpg", lambda f: fifo(f / "pipe.jpg"), "pipe.jpg", "not a regular file"),
    Case("duplicate-stem", _duplicate, "P0001.png", "duplicate name"),
    Case("stray-pdf", _write("protocol.pdf", b"%PDF-1.4"), "protocol.pdf", "skipped", code=0),
    Case("stray-no-suffix", _write("README", b"read me"), "README", "skipped", code=0),
    Case("stray-thumbs-db", _write("Thumbs.db", b"\0" * 64), "Thumbs.db", "skipped", code=0),
    Case("linked-subfolder", _linked_folder, "V0009.jpg", "", code=0, extra=("V0009.jpg",)),
    Case("link-loop", _loop, "back", "already listed", code=0, extra=("V0008.jpg",)),
    Case("folder-named-jpg", _folder_named_like_image, "", "", code=0, extra=("V0007.jpg",)),
    Case("name-with-newline", lambda f: _jpeg(f, "two\nlines.jpg"), "", "", code=0, extra=("two\nlines.jpg",)),
    Case("name-with-comma-quote", lambda f: _jpeg(f, 'a,"b".jpg'), "", "", code=0, extra=('a,"b".jpg',)),
    Case("one-pixel-image", lambda f: Image.fromarray(fundus(1, 1)).save(f / "dot.png"), "", "", code=0,
         extra=("dot.png",)),
    Case("gif-named-png", lambda f: Image.fromarray(fundus()).save(f / "anim.png", format="GIF"), "", "", code=0,
         extra=("anim.png",)),
]


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("case", BATCH_CASES, ids=lambda c: c.id)
def test_batch_hostile_file_is_one_line_and_the_rest_is_written(case, entry, ckpts, cached_models, tmp_path):
    inp, out = good_folder(tmp_path / "in"), tmp_path / "out"
    case.make(inp)
    run = ENTRIES[entry]("classification", inp, out, ckpts["classification"])
    if case.problem:
        line = assert_clean(run, case.code, case.name, case.problem)
        assert line.count(case.name) >= 1 and "\n" not in line
    else:
        assert run.code == case.code and "Traceback" not in run.text, run.text
    assert_outputs(out, "classification", set(GOOD) | set(case.extra))
    if case.code == 0:
        assert "failed" not in run.text.lower()


# -- item 1: names that are not UTF-8 ------------------------------------------------------------

LATIN1 = os.fsdecode(b"caf\xe9.jpg")  # how Linux hands Python the name of a file zipped on Windows


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("task", ["classification", "fovea"])
def test_non_utf8_name_is_one_line_and_no_row_is_lost(task, entry, ckpts, cached_models, tmp_path):
    inp, out = good_folder(tmp_path / "in"), tmp_path / "out"
    _jpeg(inp, LATIN1)
    Image.fromarray(fundus(seed=5)).save(inp / "Z0009.png")  # sorted after the bad name
    run = ENTRIES[entry](task, inp, out, ckpts[task])
    assert_clean(run, 1, "caf\\xe9.jpg", "not valid UTF-8")
    assert_outputs(out, task, set(GOOD) | {"Z0009.png"})


def test_non_utf8_name_still_gets_its_disc_mask(ckpts, cached_models, tmp_path):
    """A mask file may carry any name the file system does: nothing to refuse for disc."""
    inp, out = good_folder(tmp_path / "in"), tmp_path / "out"
    _jpeg(inp, LATIN1)
    run = palm_predict("disc", inp, out, ckpts["disc"])
    assert run.code == 0 and "Traceback" not in run.text, run.text
    assert (out / "Disc_Segmentation" / os.fsdecode(b"caf\xe9.bmp")).is_file()
    assert_outputs(out, "disc", set(GOOD) | {LATIN1})


# -- item 4: non-finite model output -------------------------------------------------------------


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("model", ["classification-nan", "classification-inf", "fovea-nan", "disc-nan"])
def test_non_finite_output_is_reported_per_image_not_written(model, entry, poisoned, cached_models, tmp_path):
    task = model.split("-")[0]
    inp, out = good_folder(tmp_path / "in"), tmp_path / "out"
    run = ENTRIES[entry](task, inp, out, poisoned[model])
    for name in GOOD:
        assert_clean(run, 1, name, "not finite")
    assert_outputs(out, task, set())  # header only, no NaN row, no mask from NaN
    if task in CSV:
        assert "nan" not in (out / CSV[task]).read_text().lower()


@pytest.mark.parametrize("task", ["classification", "fovea", "disc"])
def test_non_finite_output_in_a_grand_challenge_job_writes_nothing(task, poisoned, cached_models, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    image = gc_job(inp)
    run = serve_main(task, inp, out, poisoned[f"{task}-nan"])
    last = assert_clean(run, 1, image.name, "not finite")
    assert run.text.strip().splitlines()[-1] == last
    assert nothing_written(out)


# -- item 5: folders that drop images silently (permissions need an unprivileged user) ---------------


def test_unreadable_subfolder_is_reported_and_fails_the_run(scratch, ckpts):
    root = Path(tempfile.mkdtemp(dir=scratch))
    root.chmod(0o777)
    inp, out = good_folder(root / "in"), root / "out"
    locked = inp / "locked"
    locked.mkdir()
    _jpeg(locked, "V0005.jpg")
    locked.chmod(0o000)
    for p in (inp, *inp.glob("*.*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    try:
        run = unprivileged(["palm_algos.cli", "predict", "classification", "--input", str(inp), "--output", str(out),
                            "--model", str(ckpts["classification"])], root)
    finally:
        locked.chmod(0o755)
    assert_clean(run, 1, "locked", "cannot list")
    assert_outputs(out, "classification", set(GOOD))


def test_unreadable_image_is_reported(scratch, ckpts):
    root = Path(tempfile.mkdtemp(dir=scratch))
    root.chmod(0o777)
    inp, out = good_folder(root / "in"), root / "out"
    inp.chmod(0o755)
    for p in inp.iterdir():
        p.chmod(0o644)
    _jpeg(inp, "V0006.jpg")
    (inp / "V0006.jpg").chmod(0o000)
    run = unprivileged(["palm_algos.serve", "classification", "--input", str(inp), "--output", str(out),
                        "--model", str(ckpts["classification"])], root)
    line = assert_clean(run, 1, "V0006.jpg", "cannot read image (Permission denied)")
    assert line.count("V0006.jpg") == 1  # the path once, not again inside the reason
    assert_outputs(out, "classification", set(GOOD))


# -- item 2 and the folders themselves ---------------------------------------------------------------


def test_read_only_output_is_one_line_before_any_prediction(scratch, ckpts):
    root = Path(tempfile.mkdtemp(dir=scratch))
    root.chmod(0o755)
    inp, out = good_folder(root / "in"), root / "readonly"
    for p in (inp, *inp.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    out.mkdir()
    out.chmod(0o555)
    run = unprivileged(["palm_algos.cli", "predict", "classification", "--input", str(inp), "--output", str(out),
                        "--model", str(ckpts["classification"])], root)
    line = assert_clean(run, 1, str(out), "cannot write")
    assert "Permission denied" in line
    assert "classification:" not in run.text  # refused before the progress bar started
    assert nothing_written(out)


def _output_under_a_file(tmp: Path) -> tuple[Path, str]:
    (tmp / "taken").write_text("a regular file")
    return tmp / "taken" / "sub", "taken"


def _output_is_a_file(tmp: Path) -> tuple[Path, str]:
    (tmp / "out.csv").write_text("a regular file")
    return tmp / "out.csv", "out.csv"


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("task", ["classification", "disc"])
@pytest.mark.parametrize("where", [_output_under_a_file, _output_is_a_file], ids=["under-a-file", "is-a-file"])
def test_output_that_cannot_be_a_folder_is_one_line(where, task, entry, ckpts, cached_models, tmp_path):
    inp = good_folder(tmp_path / "in")
    out, name = where(tmp_path)
    run = ENTRIES[entry](task, inp, out, ckpts[task])
    line = assert_clean(run, 1, name, "is a file")
    assert run.text.strip().splitlines()[-1] == line
    assert (tmp_path / name).read_text() == "a regular file"


def test_output_under_a_file_in_a_grand_challenge_job(ckpts, cached_models, tmp_path):
    inp = tmp_path / "in"
    gc_job(inp)
    out, name = _output_under_a_file(tmp_path)
    run = serve_main("disc", inp, out, ckpts["disc"])
    assert_clean(run, 1, name, "is a file")


def test_missing_input_folder_says_no_such_folder(ckpts, tmp_path):
    run = palm_predict("classification", tmp_path / "nope", tmp_path / "out", ckpts["classification"])
    assert_clean(run, 1, "nope", "no such folder")
    assert nothing_written(tmp_path / "out")


def test_input_that_is_a_file(ckpts, tmp_path):
    Image.fromarray(fundus()).save(tmp_path / "one.jpg")
    for run in (palm_predict("classification", tmp_path / "one.jpg", tmp_path / "out", ckpts["classification"]),
                serve_main("classification", tmp_path / "one.jpg", tmp_path / "out", ckpts["classification"])):
        assert_clean(run, 1, "one.jpg", "not a folder")


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_folder_of_only_stray_files_has_no_images(entry, ckpts, cached_models, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "protocol.pdf").write_bytes(b"%PDF")
    run = ENTRIES[entry]("fovea", inp, tmp_path / "out", ckpts["fovea"])
    line = assert_clean(run, 1, str(inp), "no images found")
    assert "protocol.pdf" in line
    assert nothing_written(tmp_path / "out")


# -- item 6 and 9: checkpoints a user made or pointed at by mistake --------------------------------


def _torch_save(obj) -> Callable[[Path], None]:
    return lambda path: torch.save(obj, path)


def _edit_checkpoint(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        random_checkpoint(path, "classification")
        ckpt = torch.load(path, weights_only=True)
        edit(ckpt)
        torch.save(ckpt, path)

    return make


def _drop(key: str) -> Callable[[dict], None]:
    return lambda ckpt: ckpt["meta"].pop(key)


def _set_meta(**changes) -> Callable[[dict], None]:
    return lambda ckpt: ckpt["meta"].update(changes)


def _state_as_list(ckpt: dict) -> None:
    ckpt["state_dict"] = list(ckpt["state_dict"].values())


def _state_of_numbers(ckpt: dict) -> None:
    ckpt["state_dict"] = {k: 1.0 for k in ckpt["state_dict"]}


def _another_arch(path: Path) -> None:
    model = get_task("fovea").build_model("disc-fovea-heatmaps", pretrained="none")
    save_checkpoint(path, model.state_dict(), {"task": "classification", "arch": "resnet50", "input_size": 64})


def _short_ensemble(ckpt: dict) -> None:
    ckpt["state_dict"] = {f"members.{i}.{k}": v for i in range(2) for k, v in ckpt["state_dict"].items()}
    ckpt["meta"].update(members=3, member_meta=[{}, {}, {}])


CHECKPOINT_CASES = [
    # (id, make(path), problem in the line)
    ("garbage-bytes", lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), "not a readable palm checkpoint"),
    ("zero-bytes", lambda p: p.write_bytes(b""), "not a readable palm checkpoint"),
    ("plain-tensor", _torch_save(torch.zeros(3)), "not a palm checkpoint"),
    ("meta-not-a-dict", _torch_save({"state_dict": {}, "meta": ["classification"]}), "not a palm checkpoint"),
    ("meta-without-arch", _edit_checkpoint(_drop("arch")), "'arch'"),
    ("meta-without-input-size", _edit_checkpoint(_drop("input_size")), "'input_size'"),
    ("input-size-absurd", _edit_checkpoint(_set_meta(input_size=10**6)), "input_size"),
    ("input-size-text", _edit_checkpoint(_set_meta(input_size="large")), "input_size"),
    ("mean-of-two", _edit_checkpoint(_set_meta(mean=[0.5, 0.5])), "mean"),
    ("zoom-zero", _edit_checkpoint(_set_meta(zoom=0)), "zoom"),
    ("unknown-arch", _edit_checkpoint(_set_meta(arch="vit-h14")), "vit-h14"),
    ("unknown-task", _edit_checkpoint(_set_meta(task=["classification"])), "task"),
    ("state-dict-a-list", _edit_checkpoint(_state_as_list), "state_dict"),
    ("state-dict-of-numbers", _edit_checkpoint(_state_of_numbers), "state_dict"),
    ("weights-of-another-network", _another_arch, "do not fit"),
    ("ensemble-missing-a-member", _edit_checkpoint(_short_ensemble), "do not fit"),
    ("ensemble-members-text", _edit_checkpoint(_set_meta(members="three", member_meta=[])), "members"),
]


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_hand_made_checkpoint_is_one_line(case, entry, tmp_path):
    _, make, problem = case
    model = tmp_path / "mine.pt"
    make(model)
    inp, out = good_folder(tmp_path / "in"), tmp_path / "out"
    run = ENTRIES[entry]("classification", inp, out, model)
    line = assert_clean(run, 1, "mine.pt", problem)
    assert run.text.strip().splitlines()[-1] == line
    assert nothing_written(out)


def test_model_option_naming_a_folder_says_so(ckpts, tmp_path):
    inp = good_folder(tmp_path / "in")
    run = palm_predict("classification", inp, tmp_path / "out", ckpts["classification"].parent)
    line = assert_clean(run, 1, str(ckpts["classification"].parent), "is a folder")
    assert "classification.pt" in line  # and names what it holds


def test_missing_model_file(tmp_path):
    inp = good_folder(tmp_path / "in")
    run = palm_predict("classification", inp, tmp_path / "out", tmp_path / "nope.pt")
    assert_clean(run, 1, "nope.pt", "no such checkpoint file")


def test_ensemble_checkpoints_still_load(ckpts, cached_models, tmp_path):
    """combine_checkpoints' meta ("members", "member_meta") passes the validation."""
    from palm_algos.checkpoint import combine_checkpoints

    ensemble = tmp_path / "ensemble.pt"
    combine_checkpoints([ckpts["fovea"], ckpts["fovea"]], ensemble)
    inp, out = good_folder(tmp_path / "in"), tmp_path / "out"
    run = palm_predict("fovea", inp, out, ensemble, "--no-tta")
    assert run.code == 0, run.text
    assert_outputs(out, "fovea", set(GOOD))


# -- grand-challenge mode --------------------------------------------------------------------------


def gc_job(root: Path, make: Callable[[Path], None] | None = None, suffix: str = ".mha") -> Path:
    """A grand-challenge job folder: inputs.json + images/color-fundus-image/<uuid><suffix>;
    ``make(path)`` writes the image (default: a good RGB .mha)."""
    folder = root / "images" / "color-fundus-image"
    folder.mkdir(parents=True)
    path = folder / f"3fa85f64-5717-4562-b3fc-2c963f66afa6{suffix}"
    (make or (lambda p: write_mha_image(fundus(), p)))(path)
    values = [{"pk": 1, "interface": {"slug": "color-fundus-image", "kind": "Image",
                                      "relative_path": "images/color-fundus-image"},
               "image": {"pk": "3fa85f64", "name": "P0001.jpg"}, "file": None, "value": None}]
    (root / "inputs.json").write_text(json.dumps(values))
    return path


def _named_tif(fmt: str) -> Callable[[Path], None]:
    """A JPEG or GIF named .tif: SimpleITK cannot identify it, PIL reads it by its content."""
    return lambda path: Image.fromarray(fundus()).save(path, format=fmt)


GC_IMAGE_CASES = [
    # (id, make(path), problem in the line); every one exits 1 and writes nothing
    ("zeroed-compressed-bytes", mha_zeroed, "corrupt"),
    ("compressed-cut-short", mha_cut, "truncated"),
    ("header-20000x20000", mha_huge, "too large"),
    ("inflates-past-its-size", mha_bomb, "more pixel data"),
    ("data-file-outside-input", mha_points_outside, "ElementDataFile"),
    ("data-file-absolute", mha_absolute, "ElementDataFile"),
    ("jpeg-named-mha", mha_garbage, "not a MetaImage"),
    ("empty-mha", lambda p: p.write_bytes(b""), "not a MetaImage"),
    ("3d-volume", mha_volume, "3-D"),
]


@pytest.mark.parametrize("case", GC_IMAGE_CASES, ids=[c[0] for c in GC_IMAGE_CASES])
def test_gc_hostile_image_is_one_line_and_writes_nothing(case, ckpts, cached_models, tmp_path):
    _, make, problem = case
    inp, out = tmp_path / "in", tmp_path / "out"
    image = gc_job(inp, make)
    run = serve_main("disc", inp, out, ckpts["disc"])
    last = assert_clean(run, 1, image.name, problem)
    assert last == run.text.strip().splitlines()[-1] and last.startswith("palm-disc: error:")
    assert nothing_written(out)


@pytest.mark.parametrize("task, fmt", [("fovea", "JPEG"), ("disc", "JPEG"), ("disc", "GIF")])
def test_gc_tif_that_simpleitk_cannot_identify(task, fmt, ckpts, cached_models, tmp_path):
    """PIL reads it, so it is predicted; it has no world geometry: pixel space, identity."""
    import SimpleITK as sitk

    inp, out = tmp_path / "in", tmp_path / "out"
    gc_job(inp, _named_tif(fmt), suffix=".tif")
    run = serve_main(task, inp, out, ckpts[task])
    assert run.code == 0 and "Traceback" not in run.text, run.text
    if task == "disc":
        mask = sitk.ReadImage(str(out / "images" / "optic-disc-segmentation" / "output.mha"))
        assert mask.GetSize() == (64, 48) and mask.GetOrigin() == (0.0, 0.0) and mask.GetSpacing() == (1.0, 1.0)
    else:
        point = json.loads((out / "fovea.json").read_text())["point"]
        assert all(np.isfinite(point))


def test_gc_tif_pixel_bomb(ckpts, cached_models, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    image = gc_job(inp, tif_bomb, suffix=".tif")
    run = serve_main("classification", inp, out, ckpts["classification"])
    assert_clean(run, 1, image.name, "too large")
    assert nothing_written(out)


def _inputs_json(data: bytes) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        gc_job(root)
        (root / "inputs.json").write_bytes(data)

    return make


def _relative_path(value) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        gc_job(root)
        values = json.loads((root / "inputs.json").read_text())
        values[0]["interface"]["relative_path"] = value
        (root / "inputs.json").write_text(json.dumps(values))

    return make


def _image_links_out(root: Path) -> None:
    image = gc_job(root)
    outside = root.parent / "outside.mha"
    image.rename(outside)
    image.symlink_to(outside)


GC_JOB_CASES = [
    # (id, make(input folder), what names the file, problem)
    ("inputs-json-not-utf8", _inputs_json(b"[\xff\xfe]"), "inputs.json", "not readable JSON"),
    ("inputs-json-object", _inputs_json(b'{"slug": "color-fundus-image"}'), "inputs.json", "expected a list"),
    ("inputs-json-empty-list", _inputs_json(b"[]"), "inputs.json", "no input 'color-fundus-image'"),
    ("relative-path-climbs", _relative_path("../../etc"), "../../etc", "not a path inside"),
    ("relative-path-number", _relative_path(7), "7", "not found"),
    ("image-links-out", _image_links_out, "3fa85f64", "leads outside"),
]


@pytest.mark.parametrize("case", GC_JOB_CASES, ids=[c[0] for c in GC_JOB_CASES])
def test_gc_hostile_job_is_one_line(case, ckpts, cached_models, tmp_path):
    _, make, name, problem = case
    inp, out = tmp_path / "in", tmp_path / "out"
    make(inp)
    run = serve_main("classification", inp, out, ckpts["classification"])
    last = assert_clean(run, 1, name, problem)
    assert last == run.text.strip().splitlines()[-1]
    assert nothing_written(out)


# -- memory stays bounded whatever a header claims ------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc peak-RSS reset")
def test_huge_headers_are_refused_before_any_allocation(tmp_path):
    """Peak memory of reading each lying header, in a fresh process whose peak-RSS mark is
    reset after the imports (ru_maxrss would carry the parent's over exec): a few MB, not GB."""
    names = ("huge.mha", "bomb.mha", "bomb.png", "bomb.tif")
    for make, name in zip((mha_huge, mha_bomb, png_bomb, tif_bomb), names):
        make(tmp_path / name)
    code = (
        "import re, sys\n"
        "from palm_algos.imageio import ImageError, read_image\n"
        "import SimpleITK\n"
        "def kb(key):\n"
        "    return int(re.search(key + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "base = kb('VmRSS')\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        read_image(name)\n"
        "    except ImageError as exc:\n"
        "        print(exc)\n"
        "print('grew', kb('VmHWM') - base)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *(str(tmp_path / n) for n in names)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 5 and all("too large" in line or "more pixel data" in line for line in lines[:4]), proc.stdout
    grew_kb = int(lines[-1].split()[-1])
    assert grew_kb < 100_000, f"peak memory grew by {grew_kb / 1e3:.0f} MB"


# -- item 9: the docs say what the code does ----------------------------------------------------------


def test_containers_doc_promises_no_null_fovea():
    text = (REPO / "docs" / "CONTAINERS.md").read_text()
    assert "`null` when the model finds no fovea" not in text


def test_hostile_inputs_doc_lists_the_algorithm_cases():
    text = (REPO / "docs" / "HOSTILE_INPUTS.md").read_text()
    assert "## Algorithms (palm predict, containers)" in text
    section = text.split("## Algorithms (palm predict, containers)")[1].split("\n## ")[0]
    assert section.count("\n|") >= 40


# -- issue 24 ------------------------------------------------------------------------------------------


def test_ensemble_never_overwrites_a_member(ckpts, tmp_path):
    """24.2: `palm ensemble fold0.pt fold1.pt fold2.pt`, the output forgotten, wrote the ensemble of
    fold1 and fold2 over the trained fold0.pt."""
    folds = [tmp_path / f"fold{k}.pt" for k in range(3)]
    for fold in folds:
        shutil.copy(ckpts["fovea"], fold)
    before = folds[0].read_bytes()
    forgotten = CliRunner().invoke(palm, ["ensemble", *map(str, folds)])
    assert forgotten.exit_code != 0 and "--out" in forgotten.output, forgotten.output
    assert folds[0].read_bytes() == before
    member = CliRunner().invoke(palm, ["ensemble", "--out", str(folds[0]), *map(str, folds)])
    assert member.exit_code == 1 and "fold0.pt" in member.output and "one of the checkpoints" in member.output
    assert folds[0].read_bytes() == before
    made = CliRunner().invoke(palm, ["ensemble", "--out", str(tmp_path / "fovea.pt"), *map(str, folds)])
    assert made.exit_code == 0 and (tmp_path / "fovea.pt").is_file(), made.output


def limited(file_blocks: int, args: list[str], cwd: Path) -> Run:
    """``python -m <args>`` with at most ``file_blocks`` x 512 bytes per file written (``ulimit -f``), as on a full disk."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    command = f"ulimit -f {file_blocks}; exec {sys.executable} -m " + " ".join(map(shlex_quote, args))
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return Run(proc.returncode, proc.stdout + proc.stderr)


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(str(text))


def test_short_write_of_a_gc_mask_fails_and_leaves_nothing(ckpts, tmp_path):
    """24.4: SimpleITK left a truncated output.mha (and a traceback) when the file could not be written whole."""
    inp, out = tmp_path / "in", tmp_path / "out"
    gc_job(inp, lambda p: write_mha_image(fundus(640, 480), p))
    run = limited(0, ["palm_algos.serve", "disc", "--input", inp, "--output", out, "--model", ckpts["disc"]], tmp_path)
    last = assert_clean(run, 1, "output.mha", "cannot write")
    assert run.text.strip().splitlines()[-1] == last
    assert nothing_written(out)


def test_short_write_of_a_palm_mask_fails_and_names_the_file(ckpts, tmp_path):
    """24.4: every output file is written whole or not at all, and the line names the file."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    Image.fromarray(fundus(640, 480)).save(inp / "P0001.png")
    run = limited(1, ["palm_algos.cli", "predict", "disc", "--input", inp, "--output", out, "--model", ckpts["disc"]],
                  tmp_path)
    assert_clean(run, 1, "P0001.bmp", "cannot write")
    assert nothing_written(out)


def test_atomic_write_checks_the_size(tmp_path, monkeypatch):
    """24.4: a write that silently stores fewer bytes than it was given (a full network disk) fails the run."""
    from palm_algos import atomic
    from palm_algos.writers import OutputError, write_csv

    real_write = os.write
    def short(fd, data):  # stores half, says it stored all, as a broken file system may
        real_write(fd, bytes(data)[: max(1, len(data) // 2)])
        return len(data)

    monkeypatch.setattr(atomic.os, "write", short)
    (tmp_path / CSV["classification"]).write_text("FileName,PM Risk\nP0001.jpg,0.5\n")
    with pytest.raises(OutputError, match="Classification_Results.csv.*short"):
        write_csv("classification", [["P0001.jpg", "0.250000"], ["N0002.png", "0.500000"]], tmp_path)
    assert (tmp_path / CSV["classification"]).read_text() == "FileName,PM Risk\nP0001.jpg,0.5\n"  # the old file kept
    assert [p.name for p in tmp_path.iterdir()] == [CSV["classification"]]  # no temporary file left


@pytest.mark.parametrize("where", ["inside", "same"])
def test_own_output_folders_are_never_read_as_input(where, ckpts, cached_models, tmp_path):
    """24.5: overlays/ (and Disc_Segmentation/) of an earlier run inside the input folder were predicted."""
    inp = good_folder(tmp_path / "in")
    out = inp / "out" if where == "inside" else inp
    for _ in range(2):
        run = palm_predict("classification", inp, out, ckpts["classification"], "--overlays")
        assert run.code == 0 and "Traceback" not in run.text, run.text
    assert_outputs(out, "classification", set(GOOD))
    assert {p.name for p in (out / "overlays").iterdir()} == {"P0001.jpg", "N0002.jpg"}


def singular_mha(path: Path) -> None:
    """24.7: an .mha whose direction matrix is singular (all zeros): no world geometry."""
    path.write_bytes(mha_header(DimSize="64 48", TransformMatrix="0 0 0 0") + fundus().tobytes())


@pytest.mark.parametrize("task", ["fovea", "disc"])
def test_gc_image_with_a_singular_direction_is_refused(task, ckpts, cached_models, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    image = gc_job(inp, singular_mha)
    run = serve_main(task, inp, out, ckpts[task])
    last = assert_clean(run, 1, image.name, "singular")
    assert last == run.text.strip().splitlines()[-1]
    assert nothing_written(out)


def rotated_jpeg(path: Path, orientation: int = 6) -> None:
    """24.8: a JPEG stored sideways with an EXIF Orientation tag, as phones write them."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(fundus(seed=7)).save(path, format="JPEG", exif=exif)


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_exif_rotated_photograph_is_refused_by_name(entry, ckpts, cached_models, tmp_path):
    inp, out = good_folder(tmp_path / "in"), tmp_path / "out"
    rotated_jpeg(inp / "V0010.jpg")
    rotated_jpeg(inp / "V0011.jpg", orientation=1)  # "stored upright": nothing to say
    run = ENTRIES[entry]("fovea", inp, out, ckpts["fovea"])
    line = assert_clean(run, 1, "V0010.jpg", "EXIF orientation 6")
    assert "stored pixel" in line
    assert_outputs(out, "fovea", set(GOOD) | {"V0011.jpg"})


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_photographs_are_recognised_by_content(entry, ckpts, cached_models, tmp_path):
    """24.9: a .jfif (or a JPEG without a suffix) was 'skipped, unsupported file type' with exit 0."""
    inp, out = good_folder(tmp_path / "in"), tmp_path / "out"
    _jpeg(inp, "V0012.jfif")
    _jpeg(inp, "V0013")
    run = ENTRIES[entry]("classification", inp, out, ckpts["classification"])
    assert run.code == 0 and "Traceback" not in run.text and "skipped" not in run.text, run.text
    assert_outputs(out, "classification", set(GOOD) | {"V0012.jfif", "V0013"})


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_names_follow_the_evaluation_rule(entry, ckpts, cached_models, tmp_path):
    """24.10: prediction wrote rows that evaluation refuses ('a\\b.jpg') or trims (' lead.jpg');
    'a:b.jpg' is a plain name on both sides."""
    inp, out = good_folder(tmp_path / "in"), tmp_path / "out"
    for name in ("a\\b.jpg", " lead.jpg", "a:b.jpg"):
        _jpeg(inp, name)
    run = ENTRIES[entry]("classification", inp, out, ckpts["classification"])
    assert_clean(run, 1, "a\\b.jpg", "folder separator")
    assert_clean(run, 1, " lead.jpg", "space")
    assert_outputs(out, "classification", set(GOOD) | {"a:b.jpg"})


def test_gc_two_values_for_the_image_socket(ckpts, cached_models, tmp_path):
    """24.11: the first of two values for color-fundus-image was used silently."""
    inp, out = tmp_path / "in", tmp_path / "out"
    gc_job(inp)
    values = json.loads((inp / "inputs.json").read_text())
    (inp / "inputs.json").write_text(json.dumps(values + [{**values[0], "pk": 2}]))
    run = serve_main("classification", inp, out, ckpts["classification"])
    last = assert_clean(run, 1, "color-fundus-image", "2 values")
    assert last == run.text.strip().splitlines()[-1]
    assert nothing_written(out)


def test_palm_all_takes_only_task_named_checkpoints(ckpts, tmp_path):
    """24.13: a first model folder without disc.pt made palm-all take the second folder's only checkpoint,
    whatever its name ("trained for 'fovea', not 'disc'" instead of "no disc.pt")."""
    first, second = tmp_path / "ml-model", tmp_path / "app-model"
    first.mkdir(), second.mkdir()
    shutil.copy(ckpts["classification"], first / "classification.pt")
    shutil.copy(ckpts["fovea"], second / "fovea.pt")
    with pytest.raises(serve.ServeError, match="expected disc.pt in"):
        serve.find_checkpoint("disc", search=(first, second), named=True)
    assert serve.find_checkpoint("fovea", search=(first, second), named=True) == second / "fovea.pt"
