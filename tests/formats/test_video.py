"""Video files through ffmpeg: what `probe` reports and refuses, on small generated videos."""
import numpy as np
import pytest

from formats.video import UnusableVideo, probe
from mining.decode import DecodeConfig, decode_frames
from tests.mining.videos import panning, write_video


def test_probe_reports_size_rate_and_rotation(tmp_path):
    plain = write_video(tmp_path / "plain.mp4", panning(25, 48, 64, seed=1), fps=25)
    info = probe(plain)
    assert (info.width_px, info.height_px, info.fps, info.codec) == (64, 48, 25.0, "h264")
    import ffmpeg
    rotated = tmp_path / "phone.mp4"
    ffmpeg.input(str(plain)).output(str(rotated), c="copy", **{"metadata:s:v:0": "rotate=90"}).run(quiet=True)
    info = probe(rotated)
    assert (info.width_px, info.height_px) == (48, 64) and info.rotation_deg in (90, 270)
    frame = next(decode_frames(rotated, info, DecodeConfig(width_px=48)))
    assert frame.shape == (64, 48, 3)


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "undecodable"),
    (lambda p: p.write_text("<html><body>not a video</body></html>"), "undecodable"),
])
def test_probe_refuses_what_is_not_a_video(tmp_path, make, reason):
    path = tmp_path / "bad.mp4"
    make(path)
    with pytest.raises(UnusableVideo, match=reason):
        probe(path)


def test_probe_refuses_audio_only(tmp_path):
    import ffmpeg
    path = tmp_path / "podcast.m4a"
    ffmpeg.input("sine=frequency=440:duration=1", f="lavfi").output(str(path)).run(quiet=True)
    with pytest.raises(UnusableVideo, match="no video stream"):
        probe(path)
