"""Static overlays (bonnet, dashboard, A-pillar, logo): where the sidecar says, constant over time, the
scene moving around them."""
import dataclasses
import json

import cv2
import numpy as np
import pytest

from tests.world.test_video import decode_grey
from world.overlays import draw_overlays, static_mask, static_overlays
from world.video import VideoSpec, ShotSpec, render_video, sidecar_path, single_shot_spec


@pytest.fixture(scope="module")
def overlaid_video(tmp_path_factory):
    """2 s of street at 320x180 (144 rows of picture) with bonnet, A-pillar, logo and clock."""
    path = tmp_path_factory.mktemp("overlays") / "overlaid.mp4"
    spec = single_shot_spec(2, "street", 2.0, fps="25", width_px=320, height_px=180, content_height_px=144,
                            ego="hood", a_pillar=True, logo=True)
    truth = render_video(spec, path)
    return path, truth


def _box_mask(box, shape) -> np.ndarray:
    x, y, w, h = box
    mask = np.zeros(shape, bool)
    mask[y:y + h, x:x + w] = True
    return mask


def test_sidecar_boxes_and_mask_cover_what_stays_constant(overlaid_video):
    path, truth = overlaid_video
    sidecar = json.loads(sidecar_path(path).read_text())
    regions = {r["kind"]: r["box"] for r in sidecar["static_regions"]}
    assert sorted(regions) == ["a_pillar", "clock", "hood", "logo"] and regions["clock"] == sidecar["overlay_box"]
    mask = cv2.imread(str(path.parent / sidecar["static_mask_png"]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (180, 320) and set(np.unique(mask)) == {0, 255}
    covered = mask > 0
    in_boxes = np.zeros_like(covered)
    for kind in ("hood", "a_pillar", "logo"):
        in_boxes |= _box_mask(regions[kind], covered.shape)
        assert covered[_box_mask(regions[kind], covered.shape)].mean() > 0.6, kind
    assert not (covered & ~in_boxes).any()

    std = decode_grey(path, 320, 180).astype(np.float32).std(axis=0)
    content = _box_mask(truth.content_box, std.shape)
    inside = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0  # codec ringing blurs the edges
    # Opaque overlays hold their grey level; the logo (70 % opaque) lets 30 % of the scene's change through.
    for kind, most_ratio in (("hood", 0.1), ("a_pillar", 0.1), ("logo", 0.45)):
        box = _box_mask(regions[kind], std.shape)
        ring = cv2.dilate(box.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~box & ~covered & content
        print(f"{kind}: std {std[box & inside].mean():.2f} inside, {std[ring].mean():.2f} just outside")
        assert std[ring].mean() > 5, kind
        assert std[box & inside].mean() < most_ratio * std[ring].mean(), kind


def test_overlays_sit_where_dashcams_have_them():
    content_box = (0, 18, 320, 144)
    hood, pillar, logo = static_overlays(content_box, "hood", True, True)
    x, y, w, h = hood.box
    assert (x, w, y + h) == (0, 320, 18 + 144) and 0.15 <= h / 144 <= 0.20
    x, y, w, h = pillar.box
    assert (x, y, h) == (0, 18, 144) and 0.06 <= (pillar.coverage.sum() / 144) / 320 <= 0.10
    x, y, w, h = logo.box
    assert 0.08 <= w / 320 <= 0.12 and x > 0 and y > 18 and x + w < 320 and y + h < 18 + 144
    dashboard, = static_overlays(content_box, "dashboard", False, False)
    assert dashboard.box == (0, 18 + 144 - 36, 320, 36) and dashboard.coverage.min() == 1.0


def test_no_overlays_means_no_static_regions_and_no_mask(tmp_path):
    spec = VideoSpec(shots=(ShotSpec(seed=2, duration_s=0.2),), fps="25", width_px=64, height_px=32,
                     content_height_px=32, clock_overlay=False)
    truth = render_video(spec, tmp_path / "plain.mp4")
    assert truth.static_regions == [] and truth.static_mask_png is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.json", "plain.mp4"]
    with_clock = render_video(dataclasses.replace(spec, clock_overlay=True), tmp_path / "clock.mp4")
    assert with_clock.static_regions == [{"kind": "clock", "box": with_clock.overlay_box}]
    assert with_clock.static_mask_png is None


def test_unknown_ego_is_refused():
    with pytest.raises(ValueError, match="ego must be one of"):
        VideoSpec(shots=(ShotSpec(seed=0, duration_s=1.0),), ego="bonnet")


def test_with_glare_the_hood_mirrors_the_scene_and_sunlight_drifts_over_the_dashboard():
    content_box = (0, 0, 160, 96)
    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 256, (96, 160, 3), dtype=np.uint8) for _ in range(2)]

    def drawn(overlay, scene, time_s=0.0):
        canvas = scene.copy()
        draw_overlays(canvas, [overlay], time_s)
        return canvas.astype(np.int16)

    for ego in ("hood", "dashboard"):
        still, = static_overlays(content_box, ego, False, False)
        glaring, = static_overlays(content_box, ego, False, False, ego_glare=True)
        assert glaring.box == still.box, "glare changes the ego car's pixels, not where it is"
        inside = static_mask([still], 96, 160) > 0
        inside = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert np.array_equal(drawn(still, scenes[0])[inside], drawn(still, scenes[1])[inside])
    hood, = static_overlays(content_box, "hood", False, False, ego_glare=True)
    inside = cv2.erode((static_mask([hood], 96, 160) > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    mirrored = np.abs(drawn(hood, scenes[0]) - drawn(hood, scenes[1]))[inside].mean()
    scene_change = np.abs(scenes[0].astype(np.int16) - scenes[1])[~inside].mean()
    assert 0.02 * scene_change < mirrored < 0.4 * scene_change
    dashboard, = static_overlays(content_box, "dashboard", False, False, ego_glare=True)
    inside = static_mask([dashboard], 96, 160) > 0
    at = [drawn(dashboard, scenes[0], t)[inside].reshape(-1, 3).mean(axis=1) for t in (0.0, 2.0)]
    assert np.abs(at[0] - at[1]).max() > 20, "the patch of sunlight has moved"
