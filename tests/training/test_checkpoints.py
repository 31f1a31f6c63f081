"""Checkpoints load without running code; files of older versions still load, after an explicit conversion."""
import os
import random
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
from click.testing import CliRunner

from training.cli import main
from training.flow.data import DataConfig, val_loader
from training.flow.pretrain import PretrainConfig, pretrain

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class _RunsACommand:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _tiny_pretraining(world_shards, run: Path) -> PretrainConfig:
    config = PretrainConfig(data=DataConfig(shards=str(world_shards), width_px=128, height_px=64, batch_size=2,
                                            workers=0, shuffle_buffer=2, batches_per_epoch=4),
                            run_dir=run, steps=1, warmup_steps=1, device="cpu")
    pretrain(config)
    return config


def test_a_booby_trapped_checkpoint_is_refused_without_running_anything(tmp_path):
    marker, trap, image = tmp_path / "pwned", tmp_path / "last.pt", tmp_path / "photo.png"
    torch.save({"model": {}, "step": 1, "config": _RunsACommand(marker)}, trap)
    cv2.imwrite(str(image), np.zeros((64, 128, 3), np.uint8))
    runner = CliRunner()
    for command in (["export", "--ckpt", str(trap), "--out", str(tmp_path / "b.pth")],
                    ["predict", "--ckpt", str(trap), "--out", str(tmp_path / "p"), str(image)],
                    ["transfer", "--data", f"kitti:{tmp_path}", "--init", str(trap), "--run-dir", str(tmp_path / "t"),
                     "--device", "cpu"]):
        result = runner.invoke(main, command)
        assert result.exit_code == 1, (command, result.output)
        assert "holds pickled Python objects (posix.system)" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not marker.exists(), "unpickling ran the command"


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path):
    junk = tmp_path / "notes.pt"
    junk.write_text("not a checkpoint")
    result = CliRunner().invoke(main, ["export", "--ckpt", str(junk), "--out", str(tmp_path / "b.pth")])
    assert result.exit_code == 1 and "is not a GeoPt checkpoint" in result.output


def test_a_checkpoint_of_the_previous_version_converts_and_then_exports(world_shards, tmp_path):
    """Before checkpoints were plain data, GeoPt pickled its config (with Path objects) and NumPy's RNG
    state; this writes one as that version's `pretrain` did."""
    config = _tiny_pretraining(world_shards, tmp_path / "run")
    today = torch.load(config.run_dir / "last.pt", weights_only=True)
    legacy = {"step": today["step"], "epoch": today["epoch"], "model": today["model"],
              "optimiser": today["optimiser"], "scheduler": today["scheduler"],
              "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
              "config": asdict(config), "arch": config.arch, "motion_dim": config.motion_dim}
    old = tmp_path / "old.pt"
    torch.save(legacy, old)
    runner = CliRunner()
    refused = runner.invoke(main, ["export", "--ckpt", str(old), "--out", str(tmp_path / "b.pth")])
    assert refused.exit_code == 1 and "geopt-train convert-checkpoint --trust-pickle" in refused.output
    assert runner.invoke(main, ["convert-checkpoint", str(old), str(tmp_path / "new.pt")]).exit_code == 1
    converted = runner.invoke(main, ["convert-checkpoint", "--trust-pickle", str(old), str(tmp_path / "new.pt")])
    assert converted.exit_code == 0, converted.output
    exported = runner.invoke(main, ["export", "--ckpt", str(tmp_path / "new.pt"), "--out", str(tmp_path / "b.pth"),
                                    "--format", "monodepth2"])
    assert exported.exit_code == 0, exported.output
    encoder = torch.load(tmp_path / "b.pth", weights_only=True)
    assert encoder["width"] == 128 and encoder["height"] == 64
    assert torch.equal(encoder["encoder.conv1.weight"], today["model"]["structure.resnet.conv1.weight"])


def test_a_run_resumes_from_its_plain_data_checkpoint(world_shards, tmp_path):
    config = _tiny_pretraining(world_shards, tmp_path / "run")
    state = torch.load(config.run_dir / "last.pt", weights_only=True)  # no pickled objects at all
    assert state["config"]["run_dir"] == str(config.run_dir) and state["kind"] == "flow-pretraining"
    config.steps, config.resume = 2, True
    assert pretrain(config)["step"] == 2


def test_a_shard_written_by_the_previous_version_still_loads():
    """tests/fixtures/world_shard_v1.tar was written before the shared facts moved to `formats`."""
    data = DataConfig(shards=str(FIXTURES / "world_shard_v1.tar"), width_px=128, height_px=64, batch_size=2)
    target, source, true_flow, visible, _, _ = next(iter(val_loader(data)))
    assert target.shape == source.shape == (2, 3, 64, 128) and true_flow.shape == (2, 2, 64, 128)
    assert bool((visible == 1).all()), "no mask.png: every pixel shows the scene"
    assert target.float().std() > 10 and true_flow.abs().max() > 0.5
