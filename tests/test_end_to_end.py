"""The whole chain as a user runs it: a world video on a 127.0.0.1 server -> geopt-mine run -> shards ->
geopt-train pretrain steps -> an exported backbone that loads into torchvision."""
import shutil

import torch
import torchvision
from click.testing import CliRunner

from mining.cli import main as mine
from training.cli import main as train
from world.video import internet_like_spec, render_video


def test_url_to_shards_to_training_step_to_backbone(http_root, tmp_path):
    root, base = http_root
    for seed in (5, 6):
        spec = internet_like_spec(seed, duration_s=4.0, fps="25", cuts=1, stop_s=1.0, width_px=320, height_px=180,
                                  content_height_px=144)
        render_video(spec, root / f"drive_{seed}.mp4")
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{base}/drive_5.mp4\n{base}/drive_6.mp4\n")
    shards, run = tmp_path / "shards", tmp_path / "run"
    result = CliRunner().invoke(mine, ["run", "--list", str(urls), "--downloads", str(tmp_path / "downloads"),
                                       "--out", str(shards), "--width", "256"])
    assert result.exit_code == 0, result.output

    result = CliRunner().invoke(train, ["pretrain", "--shards", f"{shards}/<0000..0999>.tar",
                                        "--val-shards", str(shards / "val"), "--run-dir", str(run),
                                        "--size", "128x64", "--batch-size", "2", "--steps", "2", "--workers", "0",
                                        "--warmup-steps", "1", "--val-every", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "pretrained to step 2" in result.output

    result = CliRunner().invoke(train, ["export", "--ckpt", str(run / "last.pt"), "--out", str(tmp_path / "bb.pth")])
    assert result.exit_code == 0, result.output
    missing = torchvision.models.resnet18().load_state_dict(torch.load(tmp_path / "bb.pth"), strict=False)
    assert missing.missing_keys == ["fc.weight", "fc.bias"]
    shutil.rmtree(run)
