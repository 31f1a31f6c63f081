"""Fixtures shared across the suite: a 127.0.0.1 HTTP server, small world videos and KITTI trees."""
import functools
import http.server
import threading

import pytest

from world.kitti_export import KittiExportSpec, export_kitti
from world.video import internet_like_spec, render_video


@pytest.fixture(scope="session")
def small_video(tmp_path_factory):
    """A 320x180 internet-like video: 3 shots (2 cuts), a 1 s parked stretch, letterbox, clock."""
    path = tmp_path_factory.mktemp("video") / "world_0001.mp4"
    spec = internet_like_spec(1, duration_s=3.0, fps="25", cuts=2, stop_s=1.0, width_px=320, height_px=180,
                              content_height_px=144)
    truth = render_video(spec, path)
    return path, truth


@pytest.fixture(scope="session")
def small_kitti(tmp_path_factory):
    """A KITTI raw tree: 2 train drives and 1 test drive of 8 stereo frames at 320x96."""
    root = tmp_path_factory.mktemp("kitti")
    truth = export_kitti(KittiExportSpec(root, train_drives=2, test_drives=1, frames_per_drive=8,
                                         width_px=320, height_px=96, test_stride=2))
    return root, truth


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """(folder served, base URL): a real HTTP server on 127.0.0.1, stopped after the test."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()
