"""Driving videos that look like internet uploads, with a JSON sidecar holding the truth.

A video is a list of shots (drives of different seeds and kinds, joined by hard cuts), rendered at the
content size, put inside black letterbox bars, optionally overlaid with static graphics (the car's bonnet
or dashboard, an A-pillar, a logo: `world.overlays`), stamped with a running clock like a dashcam, and
encoded to H.264 (`formats.video.write_h264`). Frames stream into ffmpeg one at a time, so memory does
not grow with the length.

The sidecar (``<video>.json``) says what mining must find: fps, frame count, the first frame of each
shot after a cut and its kind, the frame ranges where the camera stands still, the content box inside
the bars, the box of the burnt-in clock, and the box of every static overlay, with their pixel mask in
``<video>.static.png``.
"""
import datetime as dt
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from formats.files import write_bytes_atomic, write_json_atomic
from formats.video import write_h264
from world.camera import PinholeCamera
from world.drive import DRIVE_KINDS, LIGHTS, Drive, DriveSpec
from world.overlays import EGO_KINDS, draw_overlays, static_mask, static_overlays
from world.render import Renderer

SUPPORTED_FPS = {"10": Fraction(10), "25": Fraction(25), "30": Fraction(30), "29.97": Fraction(30000, 1001)}
"""Frame rates of uploads, and 10 (KITTI's, some dashcams', and the rate mining decodes to: the cheapest
world video to render for a mining test)."""
CLOCK_START = dt.datetime(2026, 5, 14, 8, 30, 0)


@dataclass(frozen=True)
class ShotSpec:
    """`duration_s` seconds of drive `seed`, with `stops` as (start, hold) seconds within the shot.

    `kind` is one of `world.drive.DRIVE_KINDS`: "street" (city driving with stops), "highway" (fast, open
    land, mostly sky and far field) or "parked_traffic" (the camera stands still, cars drive past).
    `light` and `day_seed` as in `world.drive.DriveSpec`: "night", or the same drive on another day.
    """

    seed: int
    duration_s: float
    stops: tuple[tuple[float, float], ...] = ()
    kind: str = "street"
    light: str = "day"
    day_seed: int | None = None


@dataclass(frozen=True)
class VideoSpec:
    """Everything that decides a video's pixels. Same spec, same bytes (for the same ffmpeg build)."""

    shots: tuple[ShotSpec, ...]
    fps: str = "30"
    """One of SUPPORTED_FPS: '10', '25', '30' or '29.97' (NTSC 30000/1001)."""
    width_px: int = 640
    height_px: int = 360
    content_height_px: int = 288
    """Height of the rendered picture; the rest is split into black bars above and below."""
    clock_overlay: bool = True
    crf: int = 20
    """x264 quality, lower is better; 18-23 is what uploads typically carry."""
    ego: str | None = None
    """The own car in view, fixed in the picture: None, "hood" (bonnet) or "dashboard"."""
    a_pillar: bool = False
    """A dark windscreen pillar slanting down the left edge of the picture."""
    logo: bool = False
    """A small semi-opaque channel logo near the top-right corner."""
    ego_glare: bool = False
    """The own car does not stay still: the hood mirrors the scene, sunlight drifts over the dashboard."""

    def __post_init__(self):
        if self.fps not in SUPPORTED_FPS:
            raise ValueError(f"fps must be one of {', '.join(SUPPORTED_FPS)}, got {self.fps!r}")
        if self.width_px % 2 or self.height_px % 2:
            raise ValueError(f"H.264 needs an even frame size, got {self.width_px}x{self.height_px}")
        if not 8 <= self.content_height_px <= self.height_px:
            raise ValueError(f"content height {self.content_height_px} must be within 8..{self.height_px}")
        if not self.shots or any(s.duration_s <= 0 for s in self.shots):
            raise ValueError("a video needs at least one shot of positive duration")
        if any(s.kind not in DRIVE_KINDS for s in self.shots):
            raise ValueError(f"shot kind must be one of {', '.join(DRIVE_KINDS)}")
        if any(s.light not in LIGHTS for s in self.shots):
            raise ValueError(f"shot light must be one of {', '.join(LIGHTS)}")
        if self.ego not in (None, *EGO_KINDS):
            raise ValueError(f"ego must be one of {', '.join(EGO_KINDS)} or None, got {self.ego!r}")
        PinholeCamera.kitti_like(self.width_px, self.content_height_px)

    @property
    def frame_rate(self) -> Fraction:
        return SUPPORTED_FPS[self.fps]

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the picture inside the letterbox bars."""
        top = (self.height_px - self.content_height_px) // 2
        return 0, top, self.width_px, self.content_height_px


@dataclass
class VideoTruth:
    """What the sidecar records; frame indices count from 0, ranges are half-open [start, end)."""

    fps: str
    fps_fraction: str
    frame_count: int
    width_px: int
    height_px: int
    content_box: tuple[int, int, int, int]
    overlay_box: tuple[int, int, int, int] | None
    cut_frames: list[int] = field(default_factory=list)
    """First frame of every shot after the first."""
    static_ranges: list[tuple[int, int]] = field(default_factory=list)
    """Frames whose camera pose equals the previous frame's (the car stands still)."""
    shots: list[dict] = field(default_factory=list)
    intrinsics_px: list[list[float]] | None = None
    """K of the content picture, in pixels of the content box."""
    static_regions: list[dict] = field(default_factory=list)
    """{"kind": "hood" | "dashboard" | "a_pillar" | "logo" | "clock", "box": (x, y, w, h)} of every graphic
    fixed in the picture, in video pixels: the tight box of the overlay's pixels, the clock's overlay_box."""
    static_mask_png: str | None = None
    """File name (beside the video) of a (H, W) PNG, 255 where hood, dashboard, A-pillar or logo cover the
    pixel, else 0; None without those. The clock is not in it: its digits change."""


def internet_like_spec(seed: int, duration_s: float = 12.0, fps: str = "30", cuts: int = 2,
                       stop_s: float = 3.0, width_px: int = 640, height_px: int = 360,
                       content_height_px: int = 288, ego: str | None = None, a_pillar: bool = False,
                       logo: bool = False, light: str = "day", day_seed: int | None = None,
                       ego_glare: bool = False) -> VideoSpec:
    """A typical upload: `cuts` + 1 street shots of other seeds sharing `duration_s`, the second shot (or
    the only one) starting parked for `stop_s` seconds before it pulls away (0 for none); `ego`,
    `a_pillar`, `logo` and `ego_glare` add static overlays (see `VideoSpec`), `light` and `day_seed` apply
    to every shot (see `ShotSpec`)."""
    shot_count = cuts + 1
    shot_s = duration_s / shot_count
    parked_shot = min(1, cuts)
    shots = []
    for i in range(shot_count):
        stops = ((0.0, stop_s),) if i == parked_shot and stop_s > 0 else ()
        shots.append(ShotSpec(seed=seed * 1000 + i, duration_s=shot_s + (stop_s if stops else 0.0), stops=stops,
                              light=light, day_seed=day_seed))
    return VideoSpec(shots=tuple(shots), fps=fps, width_px=width_px, height_px=height_px,
                     content_height_px=content_height_px, ego=ego, a_pillar=a_pillar, logo=logo, ego_glare=ego_glare)


def single_shot_spec(seed: int, kind: str, duration_s: float, fps: str = "30", width_px: int = 640,
                     height_px: int = 360, content_height_px: int | None = None, ego: str | None = None,
                     a_pillar: bool = False, logo: bool = False, clock_overlay: bool = True,
                     stops: tuple[tuple[float, float], ...] = (), light: str = "day", day_seed: int | None = None,
                     ego_glare: bool = False) -> VideoSpec:
    """One uncut `duration_s` shot of `kind` (see `ShotSpec`), the picture `content_height_px` tall
    (None: the whole frame, no bars)."""
    shot = ShotSpec(seed=seed, duration_s=duration_s, stops=stops, kind=kind, light=light, day_seed=day_seed)
    return VideoSpec(shots=(shot,), fps=fps, width_px=width_px, height_px=height_px,
                     content_height_px=content_height_px or height_px, clock_overlay=clock_overlay, ego=ego,
                     a_pillar=a_pillar, logo=logo, ego_glare=ego_glare)


def _frame_times(shot: ShotSpec, frame_rate: Fraction) -> np.ndarray:
    count = max(1, round(shot.duration_s * frame_rate))
    return np.arange(count) / float(frame_rate)


def _stamp_clock(frame: np.ndarray, text: str, origin_px: tuple[int, int], scale: float) -> None:
    cv2.putText(frame, text, origin_px, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(frame, text, origin_px, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _clock_layout(spec: VideoSpec) -> tuple[tuple[int, int], float, tuple[int, int, int, int]]:
    """Where the clock goes (bottom-left inside the content), its font scale, and its (x, y, w, h) box."""
    x0, y0, w, h = spec.content_box
    scale = max(0.3, h / 640)
    (text_w, text_h), baseline = cv2.getTextSize("2026-05-14 08:30:00", cv2.FONT_HERSHEY_SIMPLEX, scale, 3)
    origin = (x0 + max(2, w // 64), y0 + h - max(2, h // 48) - baseline)
    box = (origin[0] - 2, origin[1] - text_h - 2, text_w + 4, text_h + baseline + 4)
    return origin, scale, box


def render_video(spec: VideoSpec, out_path: Path, progress: Callable[[int], None] | None = None) -> VideoTruth:
    """Render, letterbox, overlay, stamp and encode `spec` to `out_path` (mp4), its sidecar `out_path`.json
    and, with overlays, their mask `out_path`.static.png.

    Every file appears only when complete. `progress(n)` is called after every n frames written.
    """
    out_path = Path(out_path)
    frame_rate = spec.frame_rate
    x0, y0, w, h = spec.content_box
    camera = PinholeCamera.kitti_like(w, h)
    clock_origin, clock_scale, clock_box = _clock_layout(spec)
    truth = VideoTruth(fps=spec.fps, fps_fraction=f"{frame_rate.numerator}/{frame_rate.denominator}",
                       frame_count=0, width_px=spec.width_px, height_px=spec.height_px,
                       content_box=spec.content_box, overlay_box=clock_box if spec.clock_overlay else None,
                       intrinsics_px=camera.K.tolist())
    overlays = static_overlays(spec.content_box, spec.ego, spec.a_pillar, spec.logo, spec.ego_glare)
    truth.static_regions = [{"kind": o.kind, "box": o.box} for o in overlays]
    if spec.clock_overlay:
        truth.static_regions.append({"kind": "clock", "box": clock_box})
    canvas = np.zeros((spec.height_px, spec.width_px, 3), dtype=np.uint8)

    def frames() -> Iterator[np.ndarray]:
        """The video's frames in order; fills `truth` (cuts, static ranges, shots) as it goes."""
        for shot_index, shot in enumerate(spec.shots):
            if shot_index > 0:
                truth.cut_frames.append(truth.frame_count)
            drive = Drive(DriveSpec(seed=shot.seed, duration_s=shot.duration_s, stops=shot.stops, kind=shot.kind,
                                    light=shot.light, day_seed=shot.day_seed))
            renderer = Renderer(drive.scene, camera)
            times_s = _frame_times(shot, frame_rate)
            poses, exposures = drive.poses(times_s), drive.exposure(times_s)
            truth.shots.append({"seed": shot.seed, "kind": shot.kind, "first_frame": truth.frame_count,
                                "frame_count": len(times_s), "stops": list(shot.stops), "light": shot.light,
                                "day_seed": shot.day_seed})
            static_start = None
            for i in range(len(times_s)):
                frame_index = truth.frame_count
                still = i > 0 and np.array_equal(poses[i], poses[i - 1])
                if still and static_start is None:
                    static_start = frame_index
                if not still and static_start is not None:
                    truth.static_ranges.append((static_start, frame_index))
                    static_start = None
                canvas[y0:y0 + h, x0:x0 + w] = renderer.render(poses[i], float(exposures[i]), float(times_s[i])).rgb
                draw_overlays(canvas, overlays, frame_index / float(frame_rate))
                if spec.clock_overlay:
                    clock = CLOCK_START + dt.timedelta(seconds=frame_index / float(frame_rate))
                    _stamp_clock(canvas, clock.strftime("%Y-%m-%d %H:%M:%S"), clock_origin, clock_scale)
                yield canvas
                truth.frame_count += 1
                if progress:
                    progress(1)
            if static_start is not None:
                truth.static_ranges.append((static_start, truth.frame_count))

    write_h264(out_path, frames(), truth.fps_fraction, crf=spec.crf)
    if overlays:
        ok, png = cv2.imencode(".png", static_mask(overlays, spec.height_px, spec.width_px))
        assert ok, "OpenCV could not encode a PNG"
        write_bytes_atomic(static_mask_path(out_path), png.tobytes())
        truth.static_mask_png = static_mask_path(out_path).name
    write_json_atomic(sidecar_path(out_path), truth)
    return truth


def sidecar_path(video_path: Path) -> Path:
    return Path(video_path).with_suffix(".json")


def static_mask_path(video_path: Path) -> Path:
    return Path(video_path).with_suffix(".static.png")
