"""Batched, pipelined prediction: the same PALM files whatever the batch size, the decoding
workers or the number of torchrun processes, and one bad image costs only itself."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from palm_algos.checkpoint import combine_checkpoints, save_checkpoint
from palm_algos.cli import main
from palm_algos.formats import CSV_NAMES, DISC_FOLDER, TASKS
from palm_algos.predict import Predictor, predict_folder
from palm_algos.synth import synth_case
from palm_algos.tasks import IMAGENET_MEAN, IMAGENET_STD, get_task

REPO = Path(__file__).resolve().parents[1]


def checkpoint(path: Path, task: str, arch: str, input_size: int, zoom: int = 1, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = get_task(task).build_model(arch, pretrained="none").eval()
    save_checkpoint(path, model.state_dict(), {"task": task, "arch": arch, "input_size": input_size, "zoom": zoom,
                                               "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny untrained models of the documented recipes' kinds: a ResNet50, an ensemble of
    heat-map models with the refining pass, the disc U-Net with the refining pass (flip TTA is
    the disc's default, and the tests switch it on for all)."""
    folder = tmp_path_factory.mktemp("models")
    members = [checkpoint(folder / f"fovea{s}.pt", "fovea", "disc-fovea-heatmaps", 64, zoom=2, seed=s) for s in range(2)]
    combine_checkpoints(members, folder / "fovea.pt")
    return {"classification": checkpoint(folder / "classification.pt", "classification", "resnet50", 32),
            "fovea": folder / "fovea.pt",
            "disc": checkpoint(folder / "disc.pt", "disc", "resnet34-aspp-unet", 64, zoom=2)}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Six small synthetic JPEGs of different sizes: batches of 4 end with a short one."""
    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        Image.fromarray(synth_case(i + 1, (150 + 6 * i, 140)).image).save(folder / f"V{i:04d}.jpg", quality=90)
    return folder


def run(models, images: Path, out: Path, task: str, batch_size: int, workers: int):
    return predict_folder(Predictor.load(models[task], tta=True), images, out, progress=False,
                          batch_size=batch_size, workers=workers)


def rows(out: Path, task: str) -> dict[str, list[float]]:
    with open(out / CSV_NAMES[task], newline="") as f:
        return {row[0]: [float(v) for v in row[1:]] for row in list(csv.reader(f))[1:]}


def masks(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted((out / DISC_FOLDER).glob("*.bmp"))}


def assert_same_outputs(a: Path, b: Path, tasks=TASKS) -> None:
    """Risks to 1e-5 (6 digits written) and positions to the 2 digits written; masks exactly."""
    for task in tasks:
        if task in CSV_NAMES:
            first, second = rows(a, task), rows(b, task)
            assert list(first) == list(second)
            for name in first:
                assert first[name] == pytest.approx(second[name], abs=1e-5 if task == "classification" else 0.011), name
        else:
            first, second = masks(a), masks(b)
            assert list(first) == list(second) and first
            for name in first:
                assert np.array_equal(first[name], second[name]), name


@pytest.mark.parametrize("task", TASKS)
def test_batch_size_and_workers_do_not_change_the_predictions(models, images, tmp_path, task):
    one = run(models, images, tmp_path / "one", task, batch_size=1, workers=0)
    four = run(models, images, tmp_path / "four", task, batch_size=4, workers=2)
    assert one == four and one.predicted == 6 and not one.problems
    assert_same_outputs(tmp_path / "one", tmp_path / "four", [task])


@pytest.mark.parametrize("task", TASKS)
def test_a_batch_is_the_images_predicted_one_by_one(models, images, task):
    """``Predictor.predict`` (the overlays' and grand-challenge's path) is the batch of one."""
    predictor = Predictor.load(models[task], tta=True)
    passes = []
    predictor.model.register_forward_hook(lambda module, args, out: passes.append(len(args[0])))
    paths = sorted(images.iterdir())
    alone = [predictor.predict(p) for p in paths]
    passes.clear()
    views = [predictor.views(predictor.read(p)) for p in paths]
    big = torch.stack([v[1] for v in views]) if predictor.zoom > 1 else None
    batched = [predictor.decode(out, v[2])
               for out, v in zip(predictor.outputs(torch.stack([v[0] for v in views]), big, paths), views)]
    assert passes[0] == len(paths)  # one batch
    assert len(passes) == predictor.zoom  # the refining pass: one more batch
    for single, together in zip(alone, batched):
        if task == "disc":
            assert np.array_equal(single, together)
        else:
            assert np.allclose(single, together, atol=1e-5)


class NaNForFlatImages(torch.nn.Module):
    """The model, with a broken output for an image of one colour only."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x).clone()
        out[x.flatten(2).std(2).amax(1) == 0] = float("nan")
        return out


def test_a_bad_image_in_a_batch_costs_only_itself(models, images, tmp_path):
    clean = tmp_path / "clean"
    run(models, images, clean, "classification", batch_size=4, workers=0)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in images.iterdir():
        (mixed / p.name).write_bytes(p.read_bytes())
    (mixed / "V0001b.jpg").write_bytes((images / "V0002.jpg").read_bytes()[:300])  # cut short: cannot be decoded
    Image.new("RGB", (160, 140), (90, 40, 20)).save(mixed / "V0002b.jpg")  # the model's output is NaN for it
    predictor = Predictor.load(models["classification"], tta=True)
    predictor.model = NaNForFlatImages(predictor.model)
    result = predict_folder(predictor, mixed, tmp_path / "out", progress=False, batch_size=4, workers=2)
    assert (result.found, result.predicted) == (8, 6)
    assert [line.split(": ")[0] for line in result.problems] == [str(mixed / "V0001b.jpg"), str(mixed / "V0002b.jpg")]
    assert "cannot read image" in result.problems[0] and "not finite" in result.problems[1]
    assert_same_outputs(clean, tmp_path / "out", ["classification"])


def test_predict_cli_takes_batch_size_and_workers(models, images, tmp_path):
    args = ["predict", "classification", "--input", str(images), "--output", str(tmp_path / "out"),
            "--model", str(models["classification"]), "--batch-size", "3", "--workers", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "wrote classification predictions for 6 of 6 images" in result.output
    bad = CliRunner().invoke(main, args[:-2] + ["--workers", "-1"])
    assert bad.exit_code == 2 and "--workers" in bad.output


def test_torchrun_shards_the_images_and_writes_one_merged_run(models, images, tmp_path):
    """Two gloo processes on the CPU write what one process writes; a bad image is reported
    once, and the exit status is the single run's."""
    folder = tmp_path / "in"
    folder.mkdir()
    for p in images.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "V0004b.jpg").write_bytes(b"not a jpeg")
    common = ["predict", *TASKS, "--input", str(folder), "--tta", "--batch-size", "2", "--workers", "0",
              *[arg for task in TASKS for arg in ("--model", str(models[task]))]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "palm_algos.cli", *common, "--output", str(tmp_path / "single")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    sharded = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              "-m", "palm_algos.cli", *common, "--output", str(tmp_path / "sharded")],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 1, single.stderr
    assert sharded.returncode != 0, sharded.stderr
    failed = [line for line in sharded.stderr.splitlines() if line.startswith("failed: ")]
    assert failed == [line for line in single.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 3 and all("V0004b.jpg: cannot read image" in line for line in failed)  # once per task
    for task in TASKS:
        assert f"wrote {task} predictions for 6 of 7 images" in sharded.stdout
    assert_same_outputs(tmp_path / "single", tmp_path / "sharded")
    assert sorted(p.name for p in (tmp_path / "sharded").rglob("*") if p.is_file()) == \
        sorted(p.name for p in (tmp_path / "single").rglob("*") if p.is_file())


# -- one pass for many tasks (#25 item 3) -----------------------------------------------------------


def copy_folder(source: Path, target: Path, suffix: str | None = None) -> Path:
    """The images of ``source`` in ``target``, re-encoded losslessly as ``suffix`` if given."""
    target.mkdir()
    for p in sorted(source.iterdir()):
        if suffix:
            Image.open(p).save(target / f"{p.stem}{suffix}")
        else:
            (target / p.name).write_bytes(p.read_bytes())
    return target


@pytest.mark.parametrize("suffix", [".png", None])
def test_one_decode_feeds_every_model_as_separate_runs_do(models, images, tmp_path, suffix):
    """`palm predict classification fovea disc` decodes each image once, at the largest size any
    model needs, and writes what three separate runs write. PNGs decode at one size only; for
    the JPEGs the classification model (32 px) would take a reduced decode on its own, so
    there the one pass is checked for the two models that need the same decode (128 px)."""
    folder = copy_folder(images, tmp_path / "in", suffix)
    tasks = TASKS if suffix else ("fovea", "disc")
    predictors = [Predictor.load(models[task], tta=True) for task in tasks]
    decodes = []
    import palm_algos.predict as predict

    original = predict.read_image
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predict, "read_image", lambda path, min_side=None: decodes.append(path) or original(path, min_side))
        runs = predict.predict_tasks(predictors, folder, tmp_path / "together", progress=False, batch_size=4, workers=0)
    assert len(decodes) == 6  # once per image, not once per task
    assert all(run.predicted == 6 and not run.problems for run in runs.values())
    for task in tasks:
        run(models, folder, tmp_path / "apart", task, batch_size=4, workers=0)
    assert_same_outputs(tmp_path / "apart", tmp_path / "together", tasks)


def test_the_disc_guided_by_the_fovea_model_writes_the_discs_of_both_tasks_run_together(models, images, tmp_path):
    """`palm predict disc --guide FOVEA.pt` (palm-disc's way) finds the disc as `palm predict
    fovea disc` does and writes only the disc masks; a guide where fovea runs is refused."""
    common = ["--input", str(images), "--tta", "--batch-size", "4", "--workers", "0"]
    together = CliRunner().invoke(main, ["predict", "fovea", "disc", *common, "--output", str(tmp_path / "together"),
                                         "--model", str(models["fovea"]), "--model", str(models["disc"])])
    assert together.exit_code == 0, together.output
    guided = CliRunner().invoke(main, ["predict", "disc", *common, "--output", str(tmp_path / "guided"),
                                       "--model", str(models["disc"]), "--guide", str(models["fovea"])])
    assert guided.exit_code == 0, guided.output
    assert f"its refining window guided by the disc centre of {models['fovea']}" in guided.output
    assert sorted(p.name for p in (tmp_path / "guided").iterdir()) == [DISC_FOLDER]
    assert_same_outputs(tmp_path / "together", tmp_path / "guided", ["disc"])
    refused = CliRunner().invoke(main, ["predict", "fovea", "disc", *common, "--output", str(tmp_path / "no"),
                                        "--guide", str(models["fovea"])])
    assert refused.exit_code == 2 and "--guide" in refused.output and not (tmp_path / "no").exists()
    regressor = checkpoint(tmp_path / "regressor.pt", "fovea", "resnet50", 32)  # no disc head: nothing to guide with
    refused = CliRunner().invoke(main, ["predict", "disc", *common, "--output", str(tmp_path / "no"),
                                        "--model", str(models["disc"]), "--guide", str(regressor)])
    assert refused.exit_code == 1 and refused.output.strip().splitlines()[-1] == (
        f"Error: {regressor}: not a joint disc + fovea model (fovea, resnet50): it has no disc centre to guide the "
        "disc (train a fovea model with --arch disc-fovea-heatmaps)")
    assert not list((tmp_path / "no").glob("**/*.*"))


def test_decode_gpu_without_cuda_says_so_and_decodes_on_the_cpu(models, images, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the GPU decoder runs (tests/test_gpu.py)")
    args = ["predict", "classification", "--input", str(images), "--model", str(models["classification"]),
            "--tta", "--workers", "0"]
    plain = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "cpu")])
    gpu = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "gpu"), "--decode", "gpu"])
    assert plain.exit_code == gpu.exit_code == 0, gpu.output
    assert [line for line in gpu.output.splitlines() if "--decode gpu" in line] == \
        ["--decode gpu: CUDA is not available (the models run on cpu); decoding on the CPU"]
    assert_same_outputs(tmp_path / "cpu", tmp_path / "gpu", ["classification"])


def test_the_gpu_decoder_batches_jpegs_and_falls_back_per_image(models, images, tmp_path):
    """The GPU decoder's batching and fallback, run with torchvision's CPU JPEG decoder: JPEG
    bytes decoded in one call, a PNG decoded by the workers, a JPEG the decoder refuses (cut
    short) reported by the CPU path; every image's views as the CPU path makes them, up to the
    decoders' rounding."""
    from palm_algos.predict import _collate, _GpuDecoder, _Images, _Reader

    folder = copy_folder(images, tmp_path / "in")
    Image.open(images / "V0001.jpg").save(folder / "V0001.png")
    whole = (images / "V0002.jpg").read_bytes()
    (folder / "V0002.jpg").write_bytes(whole[: len(whole) // 2])  # its header intact, its pixels cut short
    paths = sorted(folder.iterdir())
    predictors = [Predictor.load(models[task], tta=True) for task in ("classification", "disc")]
    reader = _Reader(predictors, keep_photo=False)
    items = [(i, p, (0, 1)) for i, p in enumerate(paths)]
    batch = _collate([_Images(items, reader, jpeg_bytes=True)[k] for k in range(len(items))])
    assert len(batch.jpegs) == 6 and [r.path.name for r in batch.decoded] == ["V0001.png"] and not batch.failed
    decoded = _GpuDecoder(torch.device("cpu"), reader)(batch)
    assert [r.path.name for r in decoded.failed] == ["V0002.jpg"] and "cannot read image" in decoded.failed[0].problem
    assert sorted(r.path.name for r in decoded.decoded) == sorted(p.name for p in paths if p.name != "V0002.jpg")
    for p, predictor in enumerate(predictors):
        first, big = decoded.views[p]
        assert first.shape == (6, 3, predictor.input_size, predictor.input_size) and first.dtype == torch.uint8
        assert (big is None) == (predictor.zoom == 1)
        for k, read in enumerate(decoded.decoded):
            cpu = reader(read.path)[0][p][0]
            assert read.frames[p].size == Image.open(read.path).size
            assert (first[k].int() - cpu.int()).abs().float().mean() < 4, read.path.name  # two decoders' rounding


# -- long runs (#25 item 6) -------------------------------------------------------------------------


def test_resume_after_a_run_killed_halfway(models, images, tmp_path):
    """A run killed halfway leaves its CSV rows in <CSV>.partial and its finished masks; --resume
    predicts only the rest, and the outputs are those of a run that was never stopped."""
    import signal
    import time

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(24):
        Image.fromarray(synth_case(i + 1, (300, 280)).image).save(folder / f"V{i:04d}.jpg", quality=90)
    common = ["-m", "palm_algos.cli", "predict", "classification", "disc", "--input", str(folder), "--tta",
              "--batch-size", "1", "--workers", "0", "--model", str(models["classification"]), "--model", str(models["disc"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean = subprocess.run([sys.executable, *common, "--output", str(tmp_path / "clean")], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "out"
    partial = out / f"{CSV_NAMES['classification']}.partial"
    stopped = subprocess.Popen([sys.executable, *common, "--output", str(out)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and stopped.poll() is None:
        if partial.is_file() and len(partial.read_text().splitlines()) >= 8:
            stopped.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert stopped.wait(60) == -signal.SIGKILL, "the run ended before it could be stopped halfway"
    assert not (out / CSV_NAMES["classification"]).exists()
    kept = len(partial.read_text().splitlines())
    masks_kept = len(list((out / DISC_FOLDER).glob("*.bmp")))
    assert 8 <= kept < 24 and masks_kept < 24
    resumed = subprocess.run([sys.executable, *common, "--output", str(out), "--resume"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"wrote classification predictions for 24 of 24 images ({kept} from the run resumed)" in resumed.stdout
    assert f"wrote disc predictions for 24 of 24 images ({masks_kept} from the run resumed)" in resumed.stdout
    assert not list(out.glob("*.partial"))
    assert_same_outputs(tmp_path / "clean", out, ["classification", "disc"])
    assert (out / CSV_NAMES["classification"]).read_bytes() == (tmp_path / "clean" / CSV_NAMES["classification"]).read_bytes()


def test_the_start_of_run_line_names_model_architecture_members_device_and_tta(models, images, tmp_path):
    result = CliRunner().invoke(main, ["predict", "fovea", "--input", str(images), "--output", str(tmp_path / "out"),
                                       "--model", str(models["fovea"]), "--device", "cpu", "--no-tta"])
    assert result.exit_code == 0, result.output
    assert (f"fovea: model {models['fovea']}: disc-fovea-heatmaps, 2 members, 64 px, refining pass x2, on cpu, "
            f"flip TTA off") in result.output
    bad = CliRunner().invoke(main, ["predict", "fovea", "--input", str(images), "--output", str(tmp_path / "out"),
                                    "--model", str(models["fovea"]), "--device", "tpu7"])
    assert bad.exit_code == 1 and "Error: device 'tpu7': not a torch device" in bad.output
