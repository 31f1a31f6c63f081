"""Near-duplicate detection on world drives and ffmpeg-made copies of one of them, fed to the builder as the
chain would: decoded once at one working width and 10 frames/s, black bars cropped; and the index that
keeps the search fast, on generated fingerprints."""
import datetime as dt
import json
import logging
import subprocess
from dataclasses import asdict

import cv2
import numpy as np
import pytest

from formats.video import decode_frames, probe
from mining.crop import content_box
from mining.fingerprint import (HASH_BITS, SAMPLE_STRIDE_FRAMES, Fingerprint, FingerprintBuilder, duplicates,
                                is_duplicate, key_bits, match_fraction)
from tests.mining.videos import write_video
from world.video import internet_like_spec, render_video, single_shot_spec

WORKING_WIDTH_PX = 320
BAR_PROBE_FRAMES = 20
COPIES = {
    "reencoded": ["-c:v", "libx264", "-crf", "32", "-preset", "ultrafast"],
    "zoomed": ["-vf", "crop=iw*0.92:ih*0.92,scale=320:180", "-c:v", "libx264", "-crf", "26"],
    "resized": ["-vf", "scale=480:270", "-c:v", "libx264", "-crf", "24", "-preset", "medium"],
    "trimmed": ["-ss", "0.5", "-c:v", "libx264", "-crf", "23"],
    "all_at_once": ["-ss", "0.33", "-vf", "crop=iw*0.9:ih*0.9:iw*0.02:ih*0.03,scale=480:270", "-c:v", "libx264",
                    "-crf", "30"],
}
"""ffmpeg output options that make a copy of the original (-ss after -i trims exactly, decoding from 0)."""
SHORT_COPIES = ["reencoded", "zoomed", "resized", "trimmed", "stamped"]
"""Copies of a 3.5 s drive that are found: one changed every way at once is found from 12 s
(`test_a_copy_changed_every_way_at_once_is_found_over_12_s`); over 3.5 s it matches no better than
another drive along the same route."""


def _drive(seed: int, path):
    spec = internet_like_spec(seed, duration_s=3.5, fps="25", cuts=0, stop_s=0, width_px=320, height_px=180,
                              content_height_px=144)
    render_video(spec, path)
    return path


def _stamped_copy(source, path):
    """The original with a running clock burnt into its top right corner, re-encoded."""
    frames = []
    for index, frame in enumerate(decode_frames(source, probe(source))):
        stamped = frame.copy()
        clock = dt.datetime(2024, 1, 1, 17, 5) + dt.timedelta(seconds=index / 25)
        cv2.putText(stamped, clock.strftime("%H:%M:%S.%f")[:-4], (200, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 0), 1, cv2.LINE_AA)
        frames.append(stamped)
    return write_video(path, frames, fps=25.0, crf=22)


def _cropped_frames(path) -> list[np.ndarray]:
    """(H, W, 3) frames as the chain passes them on: working width, 10 frames/s, bars cropped."""
    info = probe(path)
    height_px = int(round(info.height_px * WORKING_WIDTH_PX / info.width_px / 2)) * 2
    frames = list(decode_frames(path, info, fps=10.0, size=(WORKING_WIDTH_PX, height_px)))
    x, y, w, h = content_box(frames[:BAR_PROBE_FRAMES])
    return [frame[y:y + h, x:x + w] for frame in frames]


def _fingerprint(frames) -> Fingerprint:
    builder = FingerprintBuilder()
    for frame in frames:
        builder.push(frame)
    return builder.result()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """{name: bar-cropped frames} of the original drive, its copies and another drive."""
    root = tmp_path_factory.mktemp("fingerprint")
    original = _drive(1, root / "original.mp4")
    paths = {"original": original, "different": _drive(2, root / "different.mp4"),
             "stamped": _stamped_copy(original, root / "stamped.mp4")}
    for name, options in COPIES.items():
        paths[name] = root / f"{name}.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(original), *options,
                        str(paths[name])], check=True)
    return {name: _cropped_frames(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def fingerprints(videos):
    return {name: _fingerprint(frames) for name, frames in videos.items()}


@pytest.mark.parametrize("copy", SHORT_COPIES)
def test_reencoded_zoomed_resized_stamped_and_trimmed_copies_are_duplicates(fingerprints, copy):
    original = fingerprints["original"]
    assert is_duplicate(original, fingerprints[copy])
    assert is_duplicate(fingerprints[copy], original)
    assert match_fraction(original, fingerprints[copy]) >= 0.6


def test_different_drives_are_not_duplicates(fingerprints):
    for copy in ["original", *COPIES, "stamped"]:
        assert not is_duplicate(fingerprints[copy], fingerprints["different"])
        assert not is_duplicate(fingerprints["different"], fingerprints[copy])
        assert match_fraction(fingerprints[copy], fingerprints["different"]) <= 0.25


def test_duplicates_names_the_copy_and_keeps_the_other_drive(fingerprints):
    ordered = [(name, fingerprints[name]) for name in ["original", "different", "zoomed"]]
    assert duplicates(ordered) == {"zoomed": "original"}
    ordered = [(name, fingerprints[name]) for name in ["trimmed", "different", "original", "all_at_once"]]
    assert duplicates(ordered) == {"original": "trimmed", "all_at_once": "trimmed"}


def test_copy_of_a_copy_names_the_first():
    """B repeats the second half of A, C the second half of B and nothing of A: C still names A."""
    rng = np.random.default_rng(0)
    hashes = [rng.bytes(HASH_BITS // 8).hex() for _ in range(40)]
    first, second, third = (Fingerprint(SAMPLE_STRIDE_FRAMES, hashes[start:start + 20]) for start in (0, 10, 20))
    assert not is_duplicate(first, third)
    assert duplicates([("a", first), ("b", second), ("c", third)]) == {"b": "a", "c": "a"}


def test_a_shared_parked_stretch_is_no_match(videos):
    """Two drives of one uploader starting parked at the same spot: standing still proves nothing."""
    parked = [videos["original"][0]] * 60
    earlier = _fingerprint(parked + videos["original"])
    later = _fingerprint(parked + videos["different"])
    assert not is_duplicate(earlier, later)
    assert is_duplicate(earlier, _fingerprint(parked + videos["zoomed"]))


def test_flat_frames_are_not_hashed_and_an_all_black_video_matches_nothing(videos):
    black = [np.zeros_like(videos["original"][0])] * 9
    with_fade = _fingerprint(black + videos["original"])
    assert with_fade.hashes[:3] == [None, None, None]
    assert is_duplicate(_fingerprint(videos["original"]), with_fade)
    all_black = _fingerprint(black)
    assert match_fraction(all_black, all_black) == 0.0
    assert not is_duplicate(all_black, all_black)


def test_fingerprint_is_a_few_hundred_hex_hashes_that_survive_json(videos):
    builder = FingerprintBuilder(max_samples=8)
    for frame in videos["original"]:
        builder.push(frame)
    fingerprint = builder.result()
    assert len(fingerprint.hashes) == 8
    assert all(len(text) == HASH_BITS // 4 for text in fingerprint.hashes)
    stored = json.loads(json.dumps(asdict(fingerprint)))
    assert stored.keys() == {"stride_frames", "hashes"}
    assert Fingerprint.from_json(stored) == fingerprint


def _copy(source, name: str, path):
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), *COPIES[name], str(path)],
                   check=True)
    return path


@pytest.fixture(scope="module")
def same_route(tmp_path_factory):
    """{name: fingerprint}: 12 s of a street on monday, the same route on tuesday (other parked cars, light,
    pace), a zoomed re-encode of each, and monday's drive cropped, zoomed, resized, re-encoded and trimmed
    at once."""
    root = tmp_path_factory.mktemp("same_route")
    paths = {}
    for day, day_seed in (("monday", None), ("tuesday", 123)):
        paths[day] = root / f"{day}.mp4"
        render_video(single_shot_spec(23, "street", 12.0, fps="10", width_px=320, height_px=180,
                                      content_height_px=144, clock_overlay=False, day_seed=day_seed), paths[day])
        paths[f"{day}_zoomed"] = _copy(paths[day], "zoomed", root / f"{day}_zoomed.mp4")
    paths["monday_all_at_once"] = _copy(paths["monday"], "all_at_once", root / "monday_all_at_once.mp4")
    return {name: _fingerprint(_cropped_frames(path)) for name, path in paths.items()}


def test_the_same_route_on_another_day_stays_while_a_zoomed_reencode_of_either_is_a_copy(same_route):
    """Along the same route the two days' hashes come near wherever they pass the same spot (24 of 40
    samples here, over the half that made a copy before), yet a copy matches nearly every sample where
    both run, another day only some."""
    order = ["monday", "monday_zoomed", "tuesday", "tuesday_zoomed"]
    assert duplicates([(name, same_route[name]) for name in order]) == {"monday_zoomed": "monday",
                                                                       "tuesday_zoomed": "tuesday"}
    for earlier, later in (("monday", "tuesday"), ("tuesday", "monday"), ("monday", "tuesday_zoomed")):
        assert not is_duplicate(same_route[earlier], same_route[later]), (earlier, later)


def test_a_copy_changed_every_way_at_once_is_found_over_12_s(same_route):
    assert is_duplicate(same_route["monday"], same_route["monday_all_at_once"])
    assert is_duplicate(same_route["monday_all_at_once"], same_route["monday"])


def _walk(rng, count: int, flip: float = 0.3) -> np.ndarray:
    """(count, HASH_BITS) bool: hashes of a drive, each sample flipping `flip` of its bits."""
    flips = rng.random((count, HASH_BITS)) < flip
    flips[0] = rng.random(HASH_BITS) < 0.5
    return np.logical_xor.accumulate(flips, axis=0)


def _as_fingerprint(bits: np.ndarray) -> Fingerprint:
    return Fingerprint(SAMPLE_STRIDE_FRAMES, [row.tobytes().hex() for row in np.packbits(bits, axis=1)])


def test_the_index_finds_what_comparing_every_pair_finds():
    """60 generated drives of 40-120 samples and 6 copies (a stretch of an earlier one, 5-23 % of the bits
    flipped, as re-encoding, zooming, or everything at once do); every pair compared as before the index."""
    rng = np.random.default_rng(5)
    drives = [_walk(rng, int(rng.integers(40, 121))) for _ in range(60)]
    videos = [(f"v{i:02d}", _as_fingerprint(bits)) for i, bits in enumerate(drives)]
    for c, flip in enumerate((0.05, 0.05, 0.12, 0.12, 0.23, 0.23)):
        original = drives[int(rng.integers(len(drives)))]
        start = int(rng.integers(0, 10))
        stretch = original[start:start + int(rng.integers(25, 40))]
        videos.append((f"v99_copy{c}", _as_fingerprint(stretch ^ (rng.random(stretch.shape) < flip))))
    every_pair = {}
    for index, (later_id, later) in enumerate(videos):
        for earlier_id, earlier in videos[:index]:
            if is_duplicate(earlier, later):
                every_pair[later_id] = every_pair.get(earlier_id, earlier_id)
                break
    assert len(every_pair) == 6 and duplicates(videos) == every_pair


def test_keys_grow_with_the_collection_so_chance_collisions_stay_few():
    assert key_bits(120, 10) == 8  # a handful of short videos: searched nearly exhaustively
    assert key_bits(480_000, 1_000) < key_bits(6_000_000, 10_000) <= 27


def test_an_unreadable_fingerprint_is_left_out_with_one_warning_naming_its_video(fingerprints, caplog):
    broken = Fingerprint(SAMPLE_STRIDE_FRAMES, ["not hex"] + fingerprints["original"].hashes[1:])
    other_stride = Fingerprint(SAMPLE_STRIDE_FRAMES + 1, fingerprints["zoomed"].hashes)
    videos = [("original", fingerprints["original"]), ("broken", broken), ("other_stride", other_stride),
              ("resized", fingerprints["resized"])]
    with caplog.at_level(logging.WARNING, logger="mining.fingerprint"):
        assert duplicates(videos) == {"resized": "original"}
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["broken", "other_stride"]
