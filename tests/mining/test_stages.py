"""Each mining stage on small generated inputs with known answers."""
import numpy as np
import pytest

from mining.crop import FixedCrop, content_box
from mining.decode import DecodeConfig, DecodeOutcome, decode_frames
from mining.download import read_url_list, refusal_reason
from mining.motion import DUPLICATE, FLASH, OK, START, STATIC, CUT, MotionConfig, MotionFilter, PairVerdict
from mining.pack import PackConfig, RunPacker
from formats.video import UnusableVideo, probe
from mining.scenes import SceneCutter
from formats.shard_schema import SampleMeta, safe_video_id, sample_key
from tests.mining.videos import panning, textured, write_video


def test_url_list_ignores_comments_blanks_and_repeats(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text("# my drives\nhttps://a.example/v1\n\n  https://a.example/v2  # the second\nhttps://a.example/v1\n")
    assert read_url_list(path) == ["https://a.example/v1", "https://a.example/v2"]


def test_local_files_are_refused(tmp_path):
    local = tmp_path / "clip.mp4"
    local.write_bytes(b"x")
    assert "local files" in refusal_reason(f"file://{local}")
    assert "local files" in refusal_reason(str(local))
    assert "scheme" in refusal_reason("ftp://host/clip.mp4")
    assert refusal_reason("https://example.com/watch?v=1") is None


def test_video_ids_cannot_escape_or_break_keys():
    assert safe_video_id("../../etc/passwd") == "etc_passwd"
    assert "." not in safe_video_id("Generic-my.video.final") and "/" not in safe_video_id("a/b")
    assert sample_key("Generic-x", 42) == "Generic-x_0000042"


def test_sample_meta_round_trips():
    meta = SampleMeta("v", "http://h/v.mp4", [4, 5, 6], [0.4, 0.5, 0.6], 10.0, 2, [1.5, 2.0], (0, 2, 64, 32),
                      (64, 36), (128, 72))
    assert SampleMeta.from_bytes(meta.to_bytes()) == meta


def test_decode_normalises_rate_and_size(tmp_path):
    path = write_video(tmp_path / "v.mp4", panning(50, 96, 128, seed=2), fps=25)  # 2 s
    frames = list(decode_frames(path, probe(path), DecodeConfig(width_px=64, fps=10)))
    assert len(frames) == 20 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8


def test_decode_handles_ten_bit_and_variable_rate(tmp_path):
    ten_bit = write_video(tmp_path / "10bit.mp4", panning(25, 96, 128, seed=3), pix_fmt="yuv420p10le")
    assert len(list(decode_frames(ten_bit, probe(ten_bit), DecodeConfig(width_px=64, fps=10)))) == 10
    import ffmpeg
    vfr = tmp_path / "vfr.mkv"  # timestamps squeezed then stretched: 25 frames over ~1.6 s
    (ffmpeg.input(str(ten_bit)).filter("setpts", "if(lt(N,12),N*0.02/TB,(0.24+(N-12)*0.1)/TB)")
     .output(str(vfr), vcodec="libx264", fps_mode="vfr").run(quiet=True))
    info = probe(vfr)
    frames = list(decode_frames(vfr, info, DecodeConfig(width_px=64, fps=10)))
    assert abs(len(frames) - info.duration_s * 10) <= 2


def test_a_truncated_file_keeps_what_decodes_and_says_why(tmp_path):
    path = write_video(tmp_path / "whole.mp4", panning(100, 96, 128, seed=4), fps=25, movflags="+faststart")
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    outcome = DecodeOutcome()
    frames = list(decode_frames(cut, probe(cut), DecodeConfig(width_px=64, fps=10), outcome))
    assert 1 <= len(frames) < 36 and outcome.frames_expected == 40, (len(frames), outcome)
    assert "truncated" in outcome.damage or "damaged" in outcome.damage
    whole = DecodeOutcome()
    assert len(list(decode_frames(path, probe(path), DecodeConfig(width_px=64, fps=10), whole))) == 40
    assert not whole.damage


def test_letterbox_bars_and_fixed_crop_are_removed():
    frame = np.zeros((90, 160, 3), np.uint8)
    frame[15:75] = textured(60, 160, seed=5)[:60, :160]
    assert content_box([frame] * 4) == (0, 17, 160, 56)  # bars 15 rows each, 2 rows shaved inside
    assert content_box([frame] * 4, FixedCrop(bottom=10)) == (0, 17, 160, 46)
    assert content_box([textured(90, 160, seed=6)[:90, :160]]) == (0, 0, 160, 90)
    with pytest.raises(ValueError, match="leaves"):
        content_box([frame], FixedCrop(top=40, bottom=40))


def test_scene_cut_found_at_the_frame_it_happens():
    first = list(panning(13, 72, 128, seed=7))
    second = [(f * np.array([0.6, 0.8, 1.2])).clip(0, 255).astype(np.uint8) for f in panning(12, 72, 128, seed=8)]
    cutter = SceneCutter(fps=10.0)
    cuts = [i for i, frame in enumerate(first + second) if cutter.is_cut(i, np.ascontiguousarray(frame))]
    assert cuts == [13]


def _verdicts(frames, cuts=(), config=MotionConfig()):
    motion = MotionFilter(frames[0].shape[1], config)
    out = [motion.push(i, f, i in cuts) for i, f in enumerate(frames)] + [motion.flush()]
    return [v for v in out if v is not None]


def test_motion_filter_tells_moving_from_still():
    moving = _verdicts([np.ascontiguousarray(f) for f in panning(6, 90, 160, seed=9, speed_px=3.0)])
    assert [v.label for v in moving] == [START] + [OK] * 5
    assert all(abs(v.motion_px - 3.0) < 0.5 for v in moving[1:])
    still = textured(90, 160, seed=9)[:90, :160]
    noise = np.random.default_rng(0)
    jitter = [np.clip(still + noise.normal(0, 2, still.shape), 0, 255).astype(np.uint8) for _ in range(4)]
    assert [v.label for v in _verdicts([still] * 3)] == [START, DUPLICATE, DUPLICATE]
    assert [v.label for v in _verdicts(jitter)] == [START, STATIC, STATIC, STATIC]


def test_a_flash_frame_breaks_both_of_its_pairs():
    frames = [np.ascontiguousarray(f) for f in panning(6, 90, 160, seed=10, speed_px=3.0)]
    frames[3] = np.clip(frames[3].astype(int) + 90, 0, 255).astype(np.uint8)
    assert [v.label for v in _verdicts(frames)] == [START, OK, OK, FLASH, FLASH, OK]


def test_detector_cuts_stand_only_where_flow_cannot_explain_the_change():
    pan = [np.ascontiguousarray(f) for f in panning(6, 90, 160, seed=11, speed_px=6.0)]
    other = [np.ascontiguousarray(f) for f in panning(3, 90, 160, seed=12, speed_px=6.0)]
    # The detector (wrongly) flags frame 2 of a pan, and (rightly) frame 6 where another street begins.
    labels = [v.label for v in _verdicts(pan + other, cuts=(2, 6))]
    assert labels == [START, OK, OK, OK, OK, OK, CUT, OK, OK]


def _pack(labels, config=PackConfig()):
    packer = RunPacker(config)
    frame = np.zeros((4, 4, 3), np.uint8)
    runs = [r for i, label in enumerate(labels) for r in packer.push(PairVerdict(i, frame, label, 1.0))]
    return [r.frame_indices for r in runs]


def test_runs_never_cross_a_break_and_share_one_frame():
    labels = [START, OK, OK, OK, OK, STATIC, OK, OK, CUT, OK, OK, OK]
    assert _pack(labels) == [[0, 1, 2], [2, 3, 4], [5, 6, 7], [8, 9, 10]]
    assert _pack(labels, PackConfig(frames_per_sample=2)) == [[0, 1], [1, 2], [2, 3], [3, 4], [5, 6], [6, 7],
                                                              [8, 9], [9, 10], [10, 11]]
    assert _pack(labels, PackConfig(stride=1))[:3] == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]
