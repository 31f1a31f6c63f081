"""`geopt-world` as a user meets it: help for every option, one-line errors, files only when complete."""
import json

from click.testing import CliRunner

from world.cli import main


def test_every_option_is_explained():
    runner = CliRunner()
    for command in ("render", "kitti", "shards", "still"):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0
        options = [line.split()[0] for line in result.output.splitlines() if line.strip().startswith("--")]
        assert len(options) >= 4
        for command_param in main.commands[command].params:
            assert command_param.help, f"{command} {command_param.name} has no help"


def test_impossible_size_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["render", "--out", str(tmp_path), "--size", "4x4"])
    assert result.exit_code == 2 and "outside 8..8192" in result.output
    result = CliRunner().invoke(main, ["kitti", "--out", str(tmp_path), "--size", "wide"])
    assert result.exit_code == 2 and "WIDTHxHEIGHT" in result.output
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["render", "--out", str(blocker / "videos"), "--videos", "1"])
    assert result.exit_code == 1 and result.output.startswith("Error: cannot write to")
    assert len(result.output.strip().splitlines()) == 1


def test_render_writes_videos_and_sidecars(tmp_path):
    result = CliRunner().invoke(main, ["render", "--out", str(tmp_path), "--videos", "2", "--duration", "0.6",
                                       "--cuts", "1", "--stop", "0", "--size", "96x48", "--content-height", "32",
                                       "--fps", "25"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world_0000.json", "world_0000.mp4",
                                                          "world_0001.json", "world_0001.mp4"]
    assert json.loads((tmp_path / "world_0001.json").read_text())["cut_frames"] == [8]


def test_render_with_overlays_writes_their_mask(tmp_path):
    result = CliRunner().invoke(main, ["render", "--out", str(tmp_path), "--videos", "1", "--duration", "0.5",
                                       "--kind", "parked_traffic", "--ego", "dashboard", "--a-pillar", "--logo",
                                       "--size", "96x48", "--content-height", "40", "--fps", "25"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "world_0000.json").read_text())
    assert [r["kind"] for r in sidecar["static_regions"]] == ["dashboard", "a_pillar", "logo", "clock"]
    assert sidecar["static_mask_png"] == "world_0000.static.png" and (tmp_path / "world_0000.static.png").is_file()
    assert sidecar["shots"][0]["kind"] == "parked_traffic" and sidecar["cut_frames"] == []


def test_render_at_night_on_another_day_with_glare_says_so_in_the_sidecar(tmp_path):
    result = CliRunner().invoke(main, ["render", "--out", str(tmp_path), "--videos", "1", "--duration", "0.5",
                                       "--cuts", "0", "--stop", "0", "--ego", "hood", "--ego-glare", "--light",
                                       "night", "--day-seed", "7", "--size", "96x48", "--content-height", "48",
                                       "--fps", "10"])
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "world_0000.json").read_text())
    assert sidecar["frame_count"] == 5 and sidecar["fps"] == "10"
    assert sidecar["shots"][0]["light"] == "night" and sidecar["shots"][0]["day_seed"] == 7


def test_kitti_rerun_resumes_without_rendering_again(tmp_path):
    args = ["kitti", "--out", str(tmp_path), "--frames", "4", "--train-drives", "1", "--size", "64x24"]
    assert CliRunner().invoke(main, args).exit_code == 0
    image = next(tmp_path.glob("*/*_drive_0001_sync/image_02/data/0000000001.png"))
    stamp = image.stat().st_mtime_ns
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and image.stat().st_mtime_ns == stamp
    assert "eigen test 1" in result.output


def test_world_shards_carry_true_flow(tmp_path):
    import io

    import numpy as np
    import webdataset as wds

    result = CliRunner().invoke(main, ["shards", "--out", str(tmp_path), "--drives", "1", "--samples", "2",
                                       "--size", "64x32"])
    assert result.exit_code == 0, result.output
    samples = list(wds.WebDataset(str(tmp_path / "0000.tar"), shardshuffle=False))
    assert len(samples) == 2
    flow = np.load(io.BytesIO(samples[0]["flow.npy"]))
    assert flow.shape == (32, 64, 2) and np.abs(flow).max() > 0.1
    flow_previous = np.load(io.BytesIO(samples[0]["flow_previous.npy"]))
    assert flow_previous.shape == (32, 64, 2) and float((flow * flow_previous).sum()) < 0, "the other way"
    assert json.loads(samples[1]["json"])["frame_indices"] == [2, 3, 4]
