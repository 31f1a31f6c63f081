"""Stage 2, probe: what a video file holds, or why it cannot be mined (ffprobe through ffmpeg-python)."""
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg


class UnusableVideo(Exception):
    """A video that cannot be mined; the message is the one-line reason for the status row."""


@dataclass(frozen=True)
class VideoInfo:
    width_px: int
    """Displayed width, rotation applied."""
    height_px: int
    fps: float
    """Average frame rate of the video stream."""
    duration_s: float
    codec: str
    pix_fmt: str
    rotation_deg: int
    """Display rotation stored in the file, as ffprobe reports it (0, 90, 180, 270); ffmpeg applies it
    when decoding, so only the swapped width and height matter here."""
    variable_frame_rate: bool


def _rotation(stream: dict) -> int:
    for side_data in stream.get("side_data_list", []):
        if "rotation" in side_data:
            return int(round(float(side_data["rotation"]))) % 360
    return int(float(stream.get("tags", {}).get("rotate", 0))) % 360


def _rate(text: str | None) -> float:
    try:
        rate = Fraction(text or "0/1")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(rate)


def probe(path: Path) -> VideoInfo:
    """Read a video's first video stream; raise UnusableVideo with the reason when it cannot be mined."""
    path = Path(path)
    if not path.is_file():
        raise UnusableVideo(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise UnusableVideo("empty file (0 bytes)")
    try:
        meta = ffmpeg.probe(str(path))
    except ffmpeg.Error as error:
        message = (error.stderr or b"").decode(errors="replace").strip().splitlines()
        raise UnusableVideo(f"undecodable: {message[-1] if message else 'ffprobe failed'}")
    videos = [s for s in meta.get("streams", []) if s.get("codec_type") == "video"
              and not s.get("disposition", {}).get("attached_pic")]
    if not videos:
        kinds = sorted({s.get("codec_type", "?") for s in meta.get("streams", [])})
        raise UnusableVideo(f"no video stream (only {', '.join(kinds) or 'nothing'})")
    stream = videos[0]
    width, height = int(stream.get("width", 0)), int(stream.get("height", 0))
    if width <= 0 or height <= 0:
        raise UnusableVideo("video stream has no frame size")
    rotation = _rotation(stream)
    if rotation in (90, 270):
        width, height = height, width
    average, nominal = _rate(stream.get("avg_frame_rate")), _rate(stream.get("r_frame_rate"))
    fps = average or nominal
    if fps <= 0:
        raise UnusableVideo("video stream has no frame rate")
    duration = float(stream.get("duration") or meta.get("format", {}).get("duration") or 0.0)
    if duration <= 0:
        raise UnusableVideo("video has no duration")
    return VideoInfo(width_px=width, height_px=height, fps=fps, duration_s=duration,
                     codec=stream.get("codec_name", "?"), pix_fmt=stream.get("pix_fmt", "?"),
                     rotation_deg=rotation,
                     variable_frame_rate=bool(average and nominal and abs(average - nominal) > 0.01 * nominal))
