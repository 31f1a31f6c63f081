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
from mining.motion import DUPLICATE, MotionFilter
from mining.shard_writer import staged_samples
from mining.static_regions import HEAD_FRAMES, find_static_regions
from tests.mining.videos import panning, write_video
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


def _assert_found_where_drawn(path, truth, detected: np.ndarray) -> None:
    """Each overlay of the world's truth and the (H, W) bool `detected` cover each other (IoU >= 0.8) in a
    window around the overlay."""
    drawn = cv2.imread(str(path.parent / truth.static_mask_png), cv2.IMREAD_GRAYSCALE) > 127
    for region in truth.static_regions:
        x, y, w, h = region["box"]
        window = np.zeros_like(drawn)
        window[max(0, y - 8):y + h + 8, max(0, x - 8):x + w + 8] = True  # the region and its surroundings
        iou = (drawn & detected & window).sum() / ((drawn | detected) & window).sum()
        assert iou >= 0.8, f"{region['kind']}: IoU {iou:.2f}"


@pytest.mark.parametrize("overlays", [dict(ego="hood", logo=True), dict(ego="dashboard", a_pillar=True)])
def test_the_ego_car_and_a_logo_are_found_where_the_world_drew_them(tmp_path, overlays):
    path, truth = _render(tmp_path, "overlays", **overlays)
    _assert_found_where_drawn(path, truth, _detected_mask(path))


@pytest.mark.parametrize("overlays", [dict(ego="hood"), dict(ego="dashboard", a_pillar=True)])
def test_a_hood_mirroring_the_scene_and_a_sunlit_dashboard_are_cropped_though_they_change(tmp_path, overlays):
    """No static run reaches their edge: the reflection and the drifting sunlight change their pixels."""
    path, truth = _render(tmp_path, "glare", fps="10", ego_glare=True, **overlays)
    _assert_found_where_drawn(path, truth, _detected_mask(path))


def test_a_flickering_row_does_not_end_a_band_at_the_bottom():
    frames = [np.ascontiguousarray(f).copy() for f in panning(40, 90, 160, seed=3, speed_px=3.0)]
    for i, frame in enumerate(frames):
        frame[70:] = 40  # a dark band 20 rows deep
        frame[70:72] = 90  # its lighter lip, an edge against the scene
        frame[80] = np.random.default_rng(i).integers(20, 120)  # one row of it flickers
    assert find_static_regions(frames).crop == (0, 21, 0, 0)


def test_a_drive_that_starts_parked_gets_the_crop_and_mask_of_the_whole_video(tmp_path):
    """10 s at a red light, then 5.5 s of driving: the first 5 s show no moving camera, so the crop and mask
    are fixed once the car has driven off, and hold for every sample."""
    path, truth = _render(tmp_path, "red_light", duration_s=15.5, fps="10", stops=((0.0, 10.0),), ego="hood",
                          logo=True)
    assert truth.static_ranges[0][1] >= 100, "parked for the first 10 s"
    report = mine_video(path, "red_light", "test", tmp_path / "staging", CHAIN)
    hood = next(r["box"] for r in truth.static_regions if r["kind"] == "hood")
    logo = next(r["box"] for r in truth.static_regions if r["kind"] == "logo")
    x, y, w, h = report.crop_box
    assert report.status == "ok" and y + h <= hood[1] + 6, (report.crop_box, hood)
    samples = list(staged_samples(tmp_path / "staging" / "red_light.tar"))
    assert samples and all(json.loads(s["json"])["crop_box"] == [x, y, w, h] for s in samples)
    visible = decode_mask(samples[0])
    logo_in_crop = visible[logo[1] - y:logo[1] - y + logo[3], logo[0] - x:logo[0] - x + logo[2]]
    assert (~logo_in_crop).mean() > 0.8 and visible.mean() > 0.9


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


def test_a_night_drive_keeps_its_moving_frames_and_repeated_frames_stay_duplicates(tmp_path):
    """A lit highway at night: most of the picture is black and a moving pair differs by 0.3-0.5 grey levels
    on average, under the duplicate threshold (0.4), until the pair is stretched to a daylight contrast."""
    path = tmp_path / "night.mp4"
    render_video(single_shot_spec(9, "highway", 6.0, fps="10", width_px=WIDTH, height_px=HEIGHT,
                                  clock_overlay=False, light="night"), path)
    report = mine_video(path, "night", "test", tmp_path / "staging", CHAIN)
    assert "duplicate" not in report.dropped and report.frames_kept >= 0.8 * report.frames_decoded, report.dropped
    frames = list(itertools.islice(decode_frames(path, probe(path), 10.0, (WIDTH, HEIGHT)), 20))
    doubled = write_video(tmp_path / "doubled.mp4", [frame for frame in frames for _ in (0, 1)], fps=10.0, crf=23)
    motion = MotionFilter(WIDTH)
    verdicts = [motion.push(i, frame, False) for i, frame in enumerate(decode_frames(doubled, probe(doubled)))]
    labels = [v.label for v in verdicts + [motion.flush()] if v is not None]
    assert labels[1::2].count(DUPLICATE) >= 0.8 * len(labels[1::2]), labels
    assert DUPLICATE not in labels[2::2], labels


@pytest.mark.parametrize("kind, moving", [("parked_traffic", False), ("street", True)])
def test_at_a_working_width_of_1280_a_parked_camera_is_static_and_a_drive_is_kept(tmp_path, kind, moving):
    """The flow grid is 160 px wide whatever the working width: a parked camera's 0.3 grid px of traffic
    and noise is 2.4 px at 1280, over the 1 px threshold unless the threshold scales with the grid."""
    path = tmp_path / f"{kind}.mp4"
    render_video(single_shot_spec(8, kind, 4.0, fps="10", width_px=1280, height_px=384, clock_overlay=False), path)
    report = mine_video(path, kind, "test", tmp_path / "staging", ChainConfig(decode=DecodeConfig(width_px=1280)))
    if moving:
        assert report.status == "ok" and report.frames_kept >= 0.8 * report.frames_decoded, report.dropped
    else:
        assert report.status == "empty" and report.samples == 0, report.dropped
