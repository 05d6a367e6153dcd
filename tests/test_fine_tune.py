"""Fine-tuning a palm model on one's own photographs: `palm train --pretrained MODEL.pt`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from palm_algos.cases import read_cases
from palm_algos.checkpoint import combine_checkpoints, load_checkpoint
from palm_algos.cli import main
from palm_algos.errors import PalmError
from palm_algos.predict import Predictor
from palm_algos.recipes import train_commands
from palm_algos.tasks import get_task
from palm_algos.train import TrainConfig, starting_model, train

SMALL = dict(input_size=64, zoom=2, geometry="fov", colour="local", epochs=1, batch_size=4, augment="none")


@pytest.fixture(scope="module")
def two_seed_disc(synth_example, tmp_path_factory) -> Path:
    """A disc ensemble of two seeds (64 px, zoom 2), trained for one epoch on the synthetic example."""
    folder = tmp_path_factory.mktemp("shipped")
    cases = read_cases(synth_example).cases
    for seed in (0, 1):
        train(get_task("disc"), cases, [], TrainConfig(pretrained="none", seed=seed, **SMALL),
              folder / f"disc-seed{seed}.pt", progress=False)
    combine_checkpoints([folder / "disc-seed0.pt", folder / "disc-seed1.pt"], folder / "disc.pt")
    return folder


def test_each_seed_starts_from_its_member_and_the_network_keeps_its_settings(two_seed_disc, synth_example, tmp_path):
    task = get_task("disc")
    for seed in (0, 1, 2):  # seed 2 of a 2-member ensemble: member 0 again
        config = TrainConfig(pretrained=str(two_seed_disc / "disc.pt"), seed=seed, augment="none")
        state, meta = starting_model(task, config)
        member = load_checkpoint(two_seed_disc / f"disc-seed{seed % 2}.pt")["state_dict"]
        assert state.keys() == member.keys() and all(torch.equal(state[k], member[k]) for k in member)
        resolved = config.resolved(task)
        assert (resolved.input_size, resolved.zoom, resolved.geometry, resolved.colour) == (64, 2, "fov", "local")

    result = train(task, read_cases(synth_example).cases, [],
                   TrainConfig(pretrained=str(two_seed_disc / "disc.pt"), seed=1, epochs=1, batch_size=4, augment="none"),
                   tmp_path / "tuned.pt", progress=False)
    tuned = load_checkpoint(tmp_path / "tuned.pt", task="disc")
    assert tuned["meta"]["zoom"] == 2 and tuned["meta"]["config"]["pretrained"] == str(two_seed_disc / "disc.pt")
    start = load_checkpoint(two_seed_disc / "disc-seed1.pt")["state_dict"]
    assert any(not torch.equal(tuned["state_dict"][k], start[k]) for k in start)  # it learned from there
    assert result["history"][0]["train_loss"] > 0
    image = read_cases(synth_example).cases[0].image
    assert Predictor.load(tmp_path / "tuned.pt", task="disc").predict(image).shape[:2][::-1] == (256, 256)


def test_a_bare_weights_file_is_still_the_backbone_switch(tmp_path):
    from torchvision.models import resnet50

    torch.save(resnet50().state_dict(), tmp_path / "w.pt")
    assert starting_model(get_task("classification"), TrainConfig(pretrained=str(tmp_path / "w.pt"))) is None


def test_settings_the_model_did_not_learn_and_unfitting_models_are_one_line(two_seed_disc, synth_example, tmp_path):
    model = str(two_seed_disc / "disc.pt")
    with pytest.raises(PalmError, match=r"a model of .*input size 64, zoom 2.*--input-size 128 differs"):
        TrainConfig(pretrained=model, input_size=128).resolved(get_task("disc"))
    for line, expected in ((["disc", "--input-size", "128"], "--input-size 128 differs"),
                           (["fovea"], "no weight in this file fits")):  # another task's: the backbone switch
        result = CliRunner().invoke(main, ["train", *line, "--data", str(synth_example), "--pretrained", model,
                                           "--out", str(tmp_path / "x.pt")])
        assert result.exit_code == 1 and expected in result.output and "Traceback" not in result.output
        assert not (tmp_path / "x.pt").exists()


def test_a_recipe_fine_tunes_each_seed_from_its_member():
    lines = train_commands("final-disc", Path("ROOT"), {"pretrained": "models/disc.pt", "data": ["mine"],
                                                       "epochs": 5, "out": "models/disc-mine.pt"})
    trains = [line for line in lines if line[0] == "train"]
    assert [line[line.index("--seed") + 1] for line in trains] == ["0", "1", "2"]
    assert all(line[line.index("--pretrained") + 1] == "models/disc.pt" for line in trains)


def test_the_joint_fovea_model_fine_tunes_on_a_palm_release_layout(synth_example, tmp_path):
    """The PALM release's fovea sheet and Disc_Masks (the synthetic example's layout) teach a
    shipped joint fovea model PALM's camera: `palm train fovea --pretrained fovea.pt` end to end."""
    common = ["--data", str(synth_example), "--epochs", "1", "--batch-size", "4", "--val-fraction", "0"]
    shipped = CliRunner().invoke(main, ["train", "fovea", *common, "--pretrained", "none", "--arch", "disc-fovea-heatmaps",
                                        "--input-size", "64", "--augment", "none", "--out", str(tmp_path / "fovea.pt")])
    assert shipped.exit_code == 0, shipped.output
    tuned = CliRunner().invoke(main, ["train", "fovea", *common, "--pretrained", str(tmp_path / "fovea.pt"),
                                      "--out", str(tmp_path / "fovea-palm.pt")])
    assert tuned.exit_code == 0, tuned.output
    meta = load_checkpoint(tmp_path / "fovea-palm.pt", task="fovea")["meta"]
    assert (meta["arch"], meta["input_size"]) == ("disc-fovea-heatmaps", 64)  # the shipped model's, not the defaults
    assert meta["train_cases"] == 8
