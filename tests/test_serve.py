"""The containers' entry point (palm_algos.serve): mode detection, path safety, model lookup,
output formats and the batch-mode failure contract, with a stand-in predictor (no model)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from palm_algos import serve
from palm_algos.fov import as_frame
from palm_algos.imageio import ImageError, read_image, write_mha_image


class FakePredictor:
    """Stands in for palm_algos.predict.Predictor: same attributes and calls, fixed answers (no model)."""

    input_size, zoom = 32, 1
    device = torch.device("cpu")
    guide = None

    def __init__(self, task: str):
        self.task = task
        self.meta = {"task": task, "arch": "fake", "input_size": 32}

    def read(self, image: Path):
        return read_image(image)  # a broken file raises ImageError, as the real one does

    def guided_by(self, guide):
        if guide.meta["arch"] != "disc-fovea-heatmaps":
            raise serve.PalmError(f"{guide.meta.get('path', 'fovea.pt')}: not a joint disc + fovea model")
        self.guide = guide
        return self

    def predict(self, image: Path, photo=None, disc=None):
        return self.predict_with_disc(image, photo, disc)[0]

    def predict_with_disc(self, image: Path, photo=None, disc=None):
        rgb, size = photo or self.read(image)
        return self.decode(self.outputs(None, None, [image])[0], size), None

    def disc_centre(self, output, frame):
        return None

    def outputs(self, first, big, images: list[Path], discs=None) -> list[Path]:
        """A batch's raw outputs: here the images' paths, which ``decode`` answers from."""
        if any(Path(image).stem == "crash" for image in images):
            raise ValueError("shape mismatch deep inside the model")
        return list(images)

    def views(self, photo, image=None):
        from palm_algos.data import model_views

        return model_views(photo, self.input_size, self.zoom)

    def decode(self, image: Path, frame, path=None):
        w, h = as_frame(frame).size
        if self.task == "classification":
            return 0.25
        if self.task == "fovea":
            return None if Path(image).stem.startswith("nofovea") else (w / 4, h / 2)
        mask = np.zeros((h, w), bool)
        mask[: h // 2, : w // 2] = True
        return mask


def fake_loader(calls: list | None = None):
    def load(task, checkpoint):
        if calls is not None:
            calls.append(Path(checkpoint))
        return FakePredictor(task)

    return load


def rgb(w=40, h=30, value=120) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


@pytest.fixture
def model(tmp_path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "any-name.pt").write_bytes(b"not read by the fake loader")
    return folder


def gc_input(root: Path, slug="color-fundus-image", relative=None, suffix=".mha", origin=(0.0, 0.0),
             spacing=(1.0, 1.0), name="P0001.jpg") -> Path:
    """A grand-challenge job input folder: inputs.json + images/<slug>/<uuid>.mha."""
    relative = relative if relative is not None else f"images/{slug}"
    folder = root / relative
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"3fa85f64-5717-4562-b3fc-2c963f66afa6{suffix}"
    if suffix == ".mha":
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(rgb(), isVector=True)
        image.SetOrigin(origin)
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(path), useCompression=True)
    else:
        Image.fromarray(rgb()).save(path)
    values = [
        {
            "pk": 1,
            "interface": {"slug": slug, "kind": "Image", "relative_path": relative},
            "image": {"pk": "3fa85f64", "name": name},
            "file": None,
            "value": None,
        }
    ]
    (root / "inputs.json").write_text(json.dumps(values))
    return path


def run(task, inp, out, model, *extra, calls=None) -> int:
    return serve.main(task, ["--input", str(inp), "--output", str(out), "--model", str(model), *extra],
                      load=fake_loader(calls))


# -- mode detection -------------------------------------------------------------------------------


def test_mode_is_grand_challenge_only_with_inputs_json(tmp_path):
    assert serve.detect_mode(tmp_path) == "palm"
    (tmp_path / "inputs.json").write_text("[]")
    assert serve.detect_mode(tmp_path) == "grand-challenge"


def test_a_folder_named_inputs_json_is_not_grand_challenge(tmp_path):
    (tmp_path / "inputs.json").mkdir()
    assert serve.detect_mode(tmp_path) == "palm"


# -- path safety ----------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", ["../etc", "images/../../x", "/etc", "", "  ", "..\\..\\x"])
def test_relative_paths_leaving_input_are_refused(tmp_path, relative):
    with pytest.raises(serve.ServeError, match="inputs.json"):
        serve.inside(tmp_path, relative)


def test_symlink_out_of_input_is_refused(tmp_path):
    root, outside = tmp_path / "input", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "images").symlink_to(outside, target_is_directory=True)
    with pytest.raises(serve.ServeError, match="outside"):
        serve.inside(root, "images")


def test_plain_relative_path_is_accepted(tmp_path):
    assert serve.inside(tmp_path, "images/color-fundus-image") == tmp_path / "images" / "color-fundus-image"


def test_gc_job_with_escaping_relative_path_fails_without_output(tmp_path, model, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    gc_input(inp)
    values = json.loads((inp / "inputs.json").read_text())
    values[0]["interface"]["relative_path"] = "../../etc"
    (inp / "inputs.json").write_text(json.dumps(values))
    assert run("classification", inp, out, model) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "not a path inside" in last and "../../etc" in last
    assert not out.exists() or not any(out.iterdir())


# -- grand-challenge mode -------------------------------------------------------------------------


def test_gc_classification_writes_a_bare_float(tmp_path, model):
    inp, out = tmp_path / "in", tmp_path / "out"
    gc_input(inp)
    assert run("classification", inp, out, model) == 0
    assert json.loads((out / "pathologic-myopia-likelihood.json").read_text()) == 0.25
    assert sorted(p.name for p in out.iterdir()) == ["pathologic-myopia-likelihood.json"]


def test_gc_fovea_point_is_in_world_space(tmp_path, model):
    inp, out = tmp_path / "in", tmp_path / "out"
    gc_input(inp, origin=(10.0, -5.0), spacing=(0.5, 2.0))
    assert run("fovea", inp, out, model) == 0
    value = json.loads((out / "fovea.json").read_text())
    assert value["type"] == "Point" and value["version"] == {"major": 1, "minor": 0}
    assert value["name"] == "fovea"
    # the fake says (w/4, h/2) = (10, 15) px -> origin + spacing * index
    assert value["point"] == pytest.approx([10 + 0.5 * 10, -5 + 2.0 * 15, 0])


def test_gc_disc_writes_mha_with_input_geometry(tmp_path, model):
    import SimpleITK as sitk

    inp, out = tmp_path / "in", tmp_path / "out"
    gc_input(inp, origin=(3.0, 4.0), spacing=(0.25, 0.25))
    assert run("disc", inp, out, model) == 0
    written = out / "images" / "optic-disc-segmentation" / "output.mha"
    mask = sitk.ReadImage(str(written))
    assert mask.GetOrigin() == (3.0, 4.0) and mask.GetSpacing() == (0.25, 0.25)
    array = sitk.GetArrayFromImage(mask)
    assert array.dtype == np.uint8 and array.shape == (30, 40)
    assert set(np.unique(array)) == {0, 1} and array[:15, :20].all() and not array[15:, :].any()


def test_gc_tif_input_and_custom_slugs_from_environment(tmp_path, model, monkeypatch):
    inp, out = tmp_path / "in", tmp_path / "out"
    gc_input(inp, slug="fundus", suffix=".tif")
    monkeypatch.setenv("PALM_INPUT_SLUG", "fundus")
    monkeypatch.setenv("PALM_OUTPUT_SLUG", "pm-risk")
    assert run("classification", inp, out, model) == 0
    assert json.loads((out / "pm-risk.json").read_text()) == 0.25


def test_gc_newer_socket_key_and_missing_relative_path(tmp_path, model):
    inp, out = tmp_path / "in", tmp_path / "out"
    gc_input(inp)
    values = json.loads((inp / "inputs.json").read_text())
    values[0]["socket"] = {"slug": "color-fundus-image"}  # no relative_path: images/<slug>
    del values[0]["interface"]
    (inp / "inputs.json").write_text(json.dumps(values))
    assert run("classification", inp, out, model) == 0


def test_gc_unknown_slug_names_the_ones_found(tmp_path, model, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    gc_input(inp, slug="something-else")
    assert run("classification", inp, out, model) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "'color-fundus-image'" in last and "something-else" in last and "PALM_INPUT_SLUG" in last


def test_gc_folder_with_two_images_is_refused(tmp_path, model, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    path = gc_input(inp)
    (path.parent / "second.mha").write_bytes(path.read_bytes())
    assert run("classification", inp, out, model) == 1
    assert "expected one" in capsys.readouterr().err.strip().splitlines()[-1]


def test_gc_broken_inputs_json(tmp_path, model, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    (inp / "inputs.json").write_text("{not json")
    assert run("classification", inp, out, model) == 1
    assert "not readable JSON" in capsys.readouterr().err.strip().splitlines()[-1]


def test_gc_unreadable_image_fails_with_one_line(tmp_path, model, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    path = gc_input(inp)
    path.write_bytes(b"ObjectType = Image\nbroken")
    assert run("disc", inp, out, model) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("palm-disc: error:") and path.name in last


# -- PALM batch mode -----------------------------------------------------------------------------


@pytest.fixture
def batch(tmp_path) -> Path:
    root = tmp_path / "batch"
    (root / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(rgb()).save(root / "P0001.jpg")
    Image.fromarray(rgb(50, 40)).save(root / "nested" / "N0002.png")
    Image.fromarray(rgb()).save(root / "nested" / "deeper" / "nofovea.tif")
    write_mha_image(rgb(), root / "V0003.mha")
    (root / "notes.txt").write_text("ignored")
    return root


def test_batch_classification_csv_one_row_per_image(tmp_path, batch, model):
    out = tmp_path / "out"
    assert run("classification", batch, out, model) == 0
    rows = list(csv.reader((out / "Classification_Results.csv").open()))
    assert rows[0] == ["FileName", "PM Risk"]
    assert sorted(r[0] for r in rows[1:]) == ["N0002.png", "P0001.jpg", "V0003.mha", "nofovea.tif"]


def test_batch_fovea_csv_uses_zero_for_no_fovea(tmp_path, batch, model):
    out = tmp_path / "out"
    assert run("fovea", batch, out, model) == 0
    rows = {r["FileName"]: r for r in csv.DictReader((out / "Fovea_Localization_Results.csv").open())}
    assert (rows["nofovea.tif"]["Fovea_X"], rows["nofovea.tif"]["Fovea_Y"]) == ("0", "0")
    assert float(rows["N0002.png"]["Fovea_X"]) == pytest.approx(12.5)


def test_batch_disc_masks_bmp_and_png(tmp_path, batch, model):
    out = tmp_path / "out"
    assert run("disc", batch, out, model) == 0
    bmps = sorted(p.name for p in (out / "Disc_Segmentation").glob("*.bmp"))
    assert bmps == ["N0002.bmp", "P0001.bmp", "V0003.bmp", "nofovea.bmp"]
    mask = np.asarray(Image.open(out / "Disc_Segmentation" / "N0002.bmp"))
    assert mask.shape == (40, 50) and mask[0, 0] == 0 and mask[-1, -1] == 255
    assert not (out / "Disc_Segmentation" / "png").exists()  # neither layout needs the PNG copy: off by default
    assert run("disc", batch, tmp_path / "png", model, "--png") == 0
    png = np.asarray(Image.open(tmp_path / "png" / "Disc_Segmentation" / "png" / "N0002.png"))
    assert np.array_equal(png, mask)


def test_batch_keeps_going_past_a_bad_image(tmp_path, batch, model, capsys):
    (batch / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "out"
    assert run("classification", batch, out, model) == 1
    rows = list(csv.reader((out / "Classification_Results.csv").open()))
    assert len(rows) == 1 + 4 and "broken.jpg" not in {r[0] for r in rows}
    err = capsys.readouterr().err.strip().splitlines()
    assert any("broken.jpg" in line for line in err[:-1])
    assert err[-1].startswith("palm-classification: 4 of 5 images predicted") and "1 failed" in err[-1]


def test_batch_survives_an_unexpected_error(tmp_path, batch, model, capsys):
    Image.fromarray(rgb()).save(batch / "crash.png")
    out = tmp_path / "out"
    assert run("fovea", batch, out, model) == 1
    rows = list(csv.reader((out / "Fovea_Localization_Results.csv").open()))
    assert len(rows) == 1 + 4 and "crash.png" not in {r[0] for r in rows}
    err = capsys.readouterr().err.strip().splitlines()
    assert any("crash.png: unexpected error (ValueError: shape mismatch" in line for line in err[:-1])
    assert "1 failed" in err[-1]


def test_batch_without_images_fails(tmp_path, model, capsys):
    inp = tmp_path / "empty"
    inp.mkdir()
    assert run("disc", inp, tmp_path / "out", model) == 1
    assert "no images" in capsys.readouterr().err.strip().splitlines()[-1]


def test_missing_input_folder(tmp_path, model, capsys):
    assert run("disc", tmp_path / "nope", tmp_path / "out", model) == 1
    assert "input folder not found" in capsys.readouterr().err


# -- model lookup ---------------------------------------------------------------------------------


def test_model_folder_with_one_checkpoint_anywhere(tmp_path):
    (tmp_path / "ml" / "sub").mkdir(parents=True)
    (tmp_path / "ml" / "sub" / "weights.pt").write_bytes(b"")
    assert serve.find_checkpoint("disc", search=(tmp_path / "ml",)) == tmp_path / "ml" / "sub" / "weights.pt"


def test_mounted_model_wins_over_baked_in(tmp_path):
    mounted, baked = tmp_path / "opt-ml-model", tmp_path / "opt-app-model"
    mounted.mkdir()
    baked.mkdir()
    (baked / "disc.pt").write_bytes(b"")
    assert serve.find_checkpoint("disc", search=(mounted, baked)) == baked / "disc.pt"
    (mounted / "new.pt").write_bytes(b"")
    assert serve.find_checkpoint("disc", search=(mounted, baked)) == mounted / "new.pt"


def test_several_checkpoints_prefer_the_task_name(tmp_path):
    for name in ("disc.pt", "fovea.pt"):
        (tmp_path / name).write_bytes(b"")
    assert serve.find_checkpoint("fovea", search=(tmp_path,)) == tmp_path / "fovea.pt"
    with pytest.raises(serve.ServeError, match="2 checkpoints"):
        serve.find_checkpoint("classification", search=(tmp_path,))


def test_no_model_says_where_to_put_one(tmp_path):
    with pytest.raises(serve.ServeError, match="/opt/ml/model"):
        serve.find_checkpoint("disc", search=(tmp_path / "none",))


def test_explicit_model_file_and_missing_file(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"")
    assert serve.find_checkpoint("disc", path) == path
    with pytest.raises(serve.ServeError, match="no such model"):
        serve.find_checkpoint("disc", tmp_path / "missing.pt")


def test_model_from_environment(tmp_path, model, monkeypatch):
    inp, out = tmp_path / "in", tmp_path / "out"
    gc_input(inp)
    monkeypatch.setenv("PALM_MODEL", str(model))
    calls = []
    assert serve.main("classification", ["--input", str(inp), "--output", str(out)], load=fake_loader(calls)) == 0
    assert calls == [model / "any-name.pt"]


def test_a_checkpoint_for_another_task_is_refused(tmp_path, capsys):
    """The real loader: a checkpoint trained for fovea must not serve disc."""
    pytest.importorskip("torch")
    from palm_algos.checkpoint import save_checkpoint

    ckpt = tmp_path / "model" / "fovea.pt"
    save_checkpoint(ckpt, {}, {"task": "fovea", "arch": "resnet50", "input_size": 32})
    inp = tmp_path / "in"
    gc_input(inp)
    assert serve.main("disc", ["--input", str(inp), "--output", str(tmp_path / "out"), "--model", str(ckpt)]) == 1
    assert "trained for 'fovea', not 'disc'" in capsys.readouterr().err


def test_bad_image_error_type_matches_the_real_reader(tmp_path):
    broken = tmp_path / "x.png"
    broken.write_bytes(b"nope")
    with pytest.raises(ImageError):
        FakePredictor("classification").predict(broken)


def test_unwritable_output_is_one_line_not_a_traceback(tmp_path, batch, model, capsys, monkeypatch):
    from palm_algos import writers

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/output/Disc_Segmentation")

    monkeypatch.setattr(writers, "write_palm_mask", refuse)
    monkeypatch.setitem(writers.OUTPUTS, "disc", writers.OUTPUTS["disc"]._replace(each=lambda *a, **k: refuse()))
    assert run("disc", batch, tmp_path / "out", model) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "palm-disc: error: /output/Disc_Segmentation: Permission denied"


# -- overlays (batch mode, off by default) ---------------------------------------------------------


def test_batch_overlays_only_when_asked_one_picture_per_image_with_every_task(tmp_path, batch, monkeypatch):
    model = tmp_path / "models"
    model.mkdir()
    for task in serve.TASKS:
        (model / f"{task}.pt").write_bytes(b"fake")
    assert run("all", batch, tmp_path / "plain", model) == 0
    assert not (tmp_path / "plain" / "overlays").exists()
    assert run("all", batch, tmp_path / "asked", model, "--overlays") == 0
    pictures = sorted(p.name for p in (tmp_path / "asked" / "overlays").iterdir())
    assert pictures == ["N0002.jpg", "P0001.jpg", "V0003.jpg", "nofovea.jpg"]
    with Image.open(tmp_path / "asked" / "overlays" / "N0002.jpg") as picture:  # 50x40 -> 1024x819
        assert picture.size == (1024, 819)
        drawn = np.asarray(picture.convert("RGB")).astype(int)
    yellow = (drawn[..., 0] > 200) & (drawn[..., 1] > 170) & (drawn[..., 2] < 90)
    assert yellow[:60, :400].any() and yellow[:, :600].sum() > yellow[:, 600:].sum()  # risk text; disc contour top left
    monkeypatch.setenv(serve.ENV_OVERLAYS, "1")
    assert run("disc", batch, tmp_path / "env", model / "disc.pt") == 0
    assert len(list((tmp_path / "env" / "overlays").glob("*.jpg"))) == 4


def test_grand_challenge_mode_never_writes_overlays(tmp_path, model):
    inp, out = tmp_path / "input", tmp_path / "output"
    gc_input(inp)
    assert run("classification", inp, out, model, "--overlays") == 0
    assert not (out / "overlays").exists()


@pytest.mark.parametrize("joint", [True, False])
def test_palm_disc_takes_the_fovea_model_beside_its_checkpoint_as_its_guide(tmp_path, batch, capsys, joint):
    """palm-disc's model folder as ./build.sh build bakes it (disc.pt and fovea.pt): the disc
    model is guided by the joint fovea model, which writes nothing of its own; a fovea model
    that cannot guide is one warning, and the disc model works alone."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("disc.pt", "fovea.pt"):
        (folder / name).write_bytes(b"")
    loaded = []

    def load(task, checkpoint):
        predictor = FakePredictor(task)
        predictor.meta = {**predictor.meta, "arch": "disc-fovea-heatmaps" if joint else "vgg19-fused", "path": checkpoint}
        loaded.append(predictor)
        return predictor

    out = tmp_path / "out"
    assert serve.main("disc", ["--input", str(batch), "--output", str(out), "--model", str(folder)], load=load) == 0
    assert [(p.task, p.meta["path"]) for p in loaded] == [("disc", folder / "disc.pt"), ("fovea", folder / "fovea.pt")]
    assert loaded[0].guide is (loaded[1] if joint else None)
    assert sorted(p.name for p in out.iterdir()) == ["Disc_Segmentation"]
    warned = f"{folder / 'fovea.pt'}: not a joint disc + fovea model; the disc model places its refining window alone"
    assert (warned in capsys.readouterr().err) == (not joint)


def test_only_palm_disc_looks_for_a_guide(tmp_path):
    """The guide is the fovea.pt beside the disc checkpoint, not the checkpoint itself; the
    other tasks take none."""
    (tmp_path / "fovea.pt").write_bytes(b"")
    assert serve.guide_beside("disc", tmp_path / "disc.pt") == tmp_path / "fovea.pt"
    assert serve.guide_beside("disc", tmp_path / "fovea.pt") is None
    assert serve.guide_beside("disc", tmp_path / "other" / "disc.pt") is None
    assert serve.guide_beside("classification", tmp_path / "classification.pt") is None
    assert serve.guide_beside("fovea", tmp_path / "mine.pt") is None
