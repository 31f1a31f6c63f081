"""The report page, rendered from synthetic videos and opened in real headless Chromium."""
import re
import shutil
import subprocess
import tempfile

import cv2
import numpy as np
import pytest

from mining.report import LABEL_COLOURS, render_report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE_REASON = "<script>alert('x')</script> decoder said <b>no</b>"


def _jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return data.tobytes()


def _road_frame(width_px: int = 320, height_px: int = 180) -> np.ndarray:
    """A sky-to-road gradient with a dark hood band at the bottom and a white logo top left."""
    frame = np.zeros((height_px, width_px, 3), np.uint8)
    frame[:, :, 0] = np.linspace(230, 60, height_px, dtype=np.uint8)[:, None]
    frame[:, :, 1] = np.linspace(180, 90, width_px, dtype=np.uint8)[None, :]
    frame[:, :, 2] = 90
    frame[150:, :] = 30
    frame[8:28, 8:48] = 255
    return frame


def _thumbnails(count: int) -> list[bytes]:
    return [_jpeg(cv2.resize(np.roll(_road_frame(), 20 * i, axis=1)[:150], (160, 75))) for i in range(count)]


def _video(video_id: str, status: str, **fields) -> dict:
    video = {"video_id": video_id, "source": f"https://videos.example/{video_id}?a=1&b=2", "status": status,
             "reason": "", "frames_decoded": 0, "frames_kept": 0, "samples": 0, "duration_s": 0.0,
             "fps_out": 10.0, "timeline": [], "thumbnails": [], "preview": None, "crop_box": None,
             "static_regions": [], "duplicate_of": None}
    video.update(fields)
    return video


def _videos() -> list[dict]:
    timeline = [[0, 12, "static"], [12, 70, "kept"], [70, 71, "cut"], [71, 74, "short_run"],
                [74, 76, "flash"], [76, 160, "kept"], [160, 200, "overlay_only"]]
    return [
        _video("drive_ok_01", "ok", frames_decoded=200, frames_kept=142, samples=28, duration_s=20.0,
               timeline=timeline, thumbnails=_thumbnails(8), preview=_jpeg(_road_frame()),
               crop_box=[0, 0, 320, 148], static_regions=[{"kind": "logo", "box": [8, 8, 40, 20]},
                                                           {"kind": "hood", "box": [0, 148, 320, 32]}]),
        _video("parked_02", "empty", reason="no moving stretch", frames_decoded=50, duration_s=5.0,
               timeline=[[0, 50, "static"]], preview=_jpeg(_road_frame())),
        _video("broken_03", "failed", reason=HOSTILE_REASON, source="javascript:alert(1)"),
        _video("copy_04", "duplicate", reason="same frames as drive_ok_01", frames_decoded=30, duration_s=3.0,
               timeline=[[0, 30, "duplicate"]], duplicate_of="drive_ok_01"),
    ]


def _totals(videos: list[dict]) -> dict:
    samples = sum(v["samples"] for v in videos)
    minutes = sum(v["duration_s"] for v in videos) / 60.0
    return {"videos": len(videos), "videos_with_samples": sum(v["samples"] > 0 for v in videos),
            "samples": samples, "source_minutes": minutes, "samples_per_minute": samples / minutes,
            "frames_decoded": 280, "frames_kept": 142, "dropped": {"static": 62, "duplicate": 30, "flash": 2},
            "by_status": {"ok": 1, "empty": 1, "failed": 1, "duplicate": 1}}


def _chromium(page, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium not found: install Debian's package (apt-get install -y chromium); "
                    "./geopt test installs it")
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=page.parent)
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """(path of the written report.html, its text)."""
    videos = _videos()
    text = render_report(videos, _totals(videos), "Mining report <shards>")
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(text, encoding="utf-8")
    return path, text


def test_browser_dom_holds_every_video_id_and_status(page):
    dom = _chromium(page[0], "--dump-dom").stdout
    for video in _videos():
        assert video["video_id"] in dom
        assert re.search(rf'class="badge"[^>]*>{video["status"]}<', dom), video["status"]
    assert "Mining report &lt;shards&gt;" in dom


def test_browser_screenshot_shows_colours_not_a_blank_page(page):
    shot_path = page[0].parent / "out.png"
    _chromium(page[0], f"--screenshot={shot_path}", "--window-size=1200,1600", "--hide-scrollbars")
    shot = cv2.imread(str(shot_path))
    assert shot is not None and shot.shape[:2] == (1600, 1200)
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 200
    assert (shot.min(axis=2) < 200).mean() > 0.05, "page is almost all white"
    kept_bgr = np.array([int(LABEL_COLOURS["kept"][i:i + 2], 16) for i in (5, 3, 1)])
    assert (np.abs(shot.astype(int) - kept_bgr).max(axis=2) <= 8).sum() > 500, "no kept stretch drawn"


def test_text_from_the_internet_is_escaped(page):
    text = page[1]
    assert "<script" not in text and "<b>no</b>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert 'href="javascript:' not in text
    assert 'href="https://videos.example/drive_ok_01?a=1&amp;b=2"' in text


def test_page_is_self_contained(page):
    text = page[1]
    for url in re.findall(r'(?:src|href)="([^"]+)"', text):
        assert url.startswith(("data:image/jpeg;base64,", "https://videos.example/")), url[:60]
    assert "script-src" not in text and "default-src 'none'" in text


def test_timeline_stretches_are_sized_in_frames_with_second_tooltips(page):
    text = page[1]
    assert 'viewBox="0 0 200 1"' in text
    assert '<rect x="12" y="0" width="58" height="1" fill="#43a047"><title>kept: frames 12–69 (1.2–7.0 s)' in text
    assert "no frames decoded" in text


def test_preview_draws_crop_box_and_static_regions(page):
    text = page[1]
    assert '<rect x="0" y="0" width="320" height="148" fill="none"' in text
    assert '<rect x="8" y="8" width="40" height="20"' in text and ">logo</text>" in text
    assert '<rect x="0" y="148" width="320" height="32"' in text and ">hood</text>" in text
    assert "no preview frame" in text
