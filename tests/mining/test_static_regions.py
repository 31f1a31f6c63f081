"""The ego car and burnt-in overlays, and camera motion, against the world's exact truth."""
import itertools
import json

import cv2
import numpy as np
import pytest

from formats.shard_schema import MASK_MEMBER, decode_mask
from formats.video import decode_frames, probe
from mining.chain import ChainConfig, mine_video
from mining.decode import DecodeConfig
from mining.shard_writer import staged_samples
from mining.static_regions import HEAD_FRAMES, find_static_regions
from world.video import render_video, single_shot_spec

WIDTH, HEIGHT = 640, 360
CHAIN = ChainConfig(decode=DecodeConfig(width_px=WIDTH))


def _render(tmp_path, name: str, **spec) -> tuple:
    path = tmp_path / f"{name}.mp4"
    spec = {"kind": "street", "duration_s": 5.5, "fps": "25", "width_px": WIDTH, "height_px": HEIGHT,
            "clock_overlay": False, **spec}
    truth = render_video(single_shot_spec(seed=8, **spec), path)
    return path, truth


def _detected_mask(path) -> np.ndarray:
    """(H, W) bool over the whole frame: what `find_static_regions` crops away or masks."""
    frames = list(itertools.islice(decode_frames(path, probe(path), 10.0, (WIDTH, HEIGHT)), HEAD_FRAMES))
    found = find_static_regions(frames)
    top, bottom, left, right = found.crop
    detected = np.ones((HEIGHT, WIDTH), bool)
    inside = detected[top:HEIGHT - bottom, left:WIDTH - right]
    inside[:] = found.mask if found.mask is not None else False
    return detected


@pytest.mark.parametrize("overlays", [dict(ego="hood", logo=True), dict(ego="dashboard", a_pillar=True)])
def test_the_ego_car_and_a_logo_are_found_where_the_world_drew_them(tmp_path, overlays):
    path, truth = _render(tmp_path, "overlays", **overlays)
    drawn = cv2.imread(str(path.parent / truth.static_mask_png), cv2.IMREAD_GRAYSCALE) > 127
    detected = _detected_mask(path)
    for region in truth.static_regions:
        x, y, w, h = region["box"]
        window = np.zeros_like(drawn)
        window[max(0, y - 8):y + h + 8, max(0, x - 8):x + w + 8] = True  # the region and its surroundings
        iou = (drawn & detected & window).sum() / ((drawn | detected) & window).sum()
        assert iou >= 0.8, f"{region['kind']}: IoU {iou:.2f}"


def test_a_drive_without_overlays_gets_no_mask(tmp_path):
    path, truth = _render(tmp_path, "plain")
    assert not truth.static_regions and not _detected_mask(path).any()
    report = mine_video(path, "plain", "test", tmp_path / "staging", CHAIN)
    assert report.status == "ok" and not report.static_regions
    assert report.crop_box == (0, 0, WIDTH, HEIGHT)
    assert all(MASK_MEMBER not in s for s in staged_samples(tmp_path / "staging" / "plain.tar"))


def test_samples_crop_the_hood_and_mask_the_logo(tmp_path):
    path, truth = _render(tmp_path, "hood", ego="hood", logo=True)
    report = mine_video(path, "hood", "test", tmp_path / "staging", CHAIN)
    hood = next(r["box"] for r in truth.static_regions if r["kind"] == "hood")
    logo = next(r["box"] for r in truth.static_regions if r["kind"] == "logo")
    x, y, w, h = report.crop_box
    assert report.status == "ok" and y + h <= hood[1] + 6, (report.crop_box, hood)
    sample = next(staged_samples(tmp_path / "staging" / "hood.tar"))
    visible = decode_mask(sample)
    assert visible.shape == (h, w)
    logo_in_crop = visible[logo[1] - y:logo[1] - y + logo[3], logo[0] - x:logo[0] - x + logo[2]]
    assert (~logo_in_crop).mean() > 0.8 and visible.mean() > 0.9


def test_a_highway_at_speed_is_kept_though_sky_and_far_field_barely_move(tmp_path):
    path, _ = _render(tmp_path, "highway", kind="highway")
    report = mine_video(path, "highway", "test", tmp_path / "staging", CHAIN)
    assert report.status == "ok" and report.frames_kept >= 0.8 * report.frames_decoded, report.dropped
    samples = [json.loads(s["json"]) for s in staged_samples(tmp_path / "staging" / "highway.tar")]
    assert min(m for s in samples for m in s["motion_px"]) >= 1.0


def test_a_parked_camera_with_traffic_passing_is_dropped(tmp_path):
    path, _ = _render(tmp_path, "parked", kind="parked_traffic")
    report = mine_video(path, "parked", "test", tmp_path / "staging", CHAIN)
    assert report.status == "empty" and report.samples == 0 and report.dropped.get("static", 0) > 40
