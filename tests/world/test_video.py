"""The exported mp4 carries what its sidecar promises: frame count, fps, cuts, letterbox, static stretch."""
import json
from fractions import Fraction

import ffmpeg
import numpy as np
import pytest

from world.video import VideoSpec, ShotSpec, internet_like_spec, render_video, sidecar_path


def decode_grey(path, width, height) -> np.ndarray:
    raw, _ = ffmpeg.input(str(path)).output("pipe:", format="rawvideo", pix_fmt="gray").run(quiet=True)
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width)


def test_decoded_video_matches_its_sidecar(small_video):
    path, truth = small_video
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["frame_count"] == truth.frame_count and sidecar["cut_frames"] == truth.cut_frames
    stream = ffmpeg.probe(str(path))["streams"][0]
    assert stream["codec_name"] == "h264" and Fraction(stream["r_frame_rate"]) == 25
    frames = decode_grey(path, truth.width_px, truth.height_px).astype(np.int16)
    assert len(frames) == truth.frame_count == 100  # 3 s of driving + 1 s parked at 25 fps

    x, y, w, h = truth.content_box
    bars = np.concatenate([frames[:, :y], frames[:, y + h:]], axis=1)
    assert bars.mean() < 2 and frames[:, :y - 2].max() < 20, "letterbox bars are black (but for codec ringing)"
    assert frames[:, y:y + 4].mean() > 40 and frames[:, y + h - 4:y + h].mean() > 40, "content reaches the box"

    step = np.abs(np.diff(frames[:, y:y + h], axis=0)).mean(axis=(1, 2))
    biggest_steps = sorted(np.argsort(step)[-len(truth.cut_frames):] + 1)
    assert biggest_steps == truth.cut_frames == [25, 75]  # 1 s shot, 1 s parked + 1 s, 1 s shot

    ox, oy, ow, oh = truth.overlay_box
    content = frames[:, y:y + h].copy()
    content[:, oy - y:oy - y + oh, ox:ox + ow] = 0  # the clock ticks even when the car stands
    still = np.abs(np.diff(content, axis=0)).mean(axis=(1, 2))
    (start, end), = truth.static_ranges
    moving = np.ones(len(still), bool)
    moving[start - 1:end - 1] = False
    assert still[start - 1:end - 1].max() < 0.3 * still[moving].mean()


def test_ntsc_rate_is_exact(tmp_path):
    spec = VideoSpec(shots=(ShotSpec(seed=2, duration_s=0.5),), fps="29.97", width_px=64, height_px=24,
                     content_height_px=24, clock_overlay=False)
    truth = render_video(spec, tmp_path / "ntsc.mp4")
    assert Fraction(ffmpeg.probe(str(tmp_path / "ntsc.mp4"))["streams"][0]["r_frame_rate"]) == Fraction(30000, 1001)
    assert truth.frame_count == 15 and truth.overlay_box is None and not truth.cut_frames


def test_interrupted_render_leaves_no_file(tmp_path):
    spec = internet_like_spec(1, duration_s=1.0, width_px=64, height_px=32, content_height_px=24)

    def interrupt_after_a_few(_count, seen=[]):
        seen.append(1)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_video(spec, tmp_path / "cut_short.mp4", progress=interrupt_after_a_few)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"fps": "24"}, "fps must be one of"),
    ({"width_px": 63}, "even frame size"),
    ({"content_height_px": 400}, "content height"),
])
def test_impossible_specs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VideoSpec(shots=(ShotSpec(seed=0, duration_s=1.0),), **kwargs)
