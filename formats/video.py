"""Video files through ffmpeg (ffmpeg-python): what a file holds (`probe`), its frames one at a time
(`decode_frames`), and H.264 written from frames (`write_h264`).

Frames travel through pipes as raw RGB, one at a time, so memory does not depend on a video's length.
ffmpeg's own messages go to a temporary file, not a pipe: a damaged video can print more than a pipe
holds and would block the decoder.
"""
import subprocess
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import ffmpeg
import numpy as np

from formats.files import atomic_path

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp",
                    ".m4a")
"""File endings taken for videos (.m4a too: a download may turn out audio only, which `probe` then names)."""
QUIET = ("-nostdin", "-loglevel", "error")


class UnusableVideo(ValueError):
    """A video that cannot be read (or, for mining, used); the message is the one-line reason."""


@dataclass(frozen=True)
class VideoInfo:
    """The first video stream of a file as decoding yields it."""

    width_px: int
    height_px: int
    """As displayed: ffmpeg applies a rotation tag while decoding, so a 90 degree one swaps the coded sizes."""
    fps: float
    """Average frame rate (the nominal one where the average is unknown)."""
    frame_rate: str
    """The same as a fraction, e.g. '30000/1001', for writing a video at the same rate."""
    duration_s: float
    frame_count: int | None
    """What the container states; None when it does not (only decoding then counts the frames)."""
    codec: str
    pix_fmt: str
    rotation_deg: int
    """Display rotation stored in the file (0, 90, 180, 270)."""
    variable_frame_rate: bool


@dataclass
class DecodeReport:
    """How a `decode_frames` pass went, filled in as it runs: frames delivered and ffmpeg's error lines."""

    frames: int = 0
    messages: list[str] = field(default_factory=list)


def _rotation(stream: dict) -> int:
    for side_data in stream.get("side_data_list", []):
        if "rotation" in side_data:
            return int(round(float(side_data["rotation"]))) % 360
    return int(float(stream.get("tags", {}).get("rotate", 0))) % 360


def _rate(text: str | None) -> Fraction:
    try:
        return Fraction(text or "0/1")
    except (ValueError, ZeroDivisionError):
        return Fraction(0)


def _last_line(text: bytes | None, default: str) -> str:
    lines = (text or b"").decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else default


def probe(path: Path) -> VideoInfo:
    """ffprobe's view of the first video stream of `path`; UnusableVideo with the reason when there is none
    that can be decoded (missing or empty file, undecodable, audio only, no size, rate or duration)."""
    path = Path(path)
    if not path.is_file():
        raise UnusableVideo(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise UnusableVideo("empty file (0 bytes)")
    try:
        meta = ffmpeg.probe(str(path))
    except ffmpeg.Error as error:
        raise UnusableVideo(f"undecodable: {_last_line(error.stderr, 'ffprobe failed').removeprefix(f'{path}: ')}")
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
    rate = average or nominal
    if rate <= 0:
        raise UnusableVideo("video stream has no frame rate")
    duration = float(stream.get("duration") or meta.get("format", {}).get("duration") or 0.0)
    if duration <= 0:
        raise UnusableVideo("video has no duration")
    count = str(stream.get("nb_frames", ""))
    return VideoInfo(width_px=width, height_px=height, fps=float(rate), frame_rate=f"{rate.numerator}/{rate.denominator}",
                     duration_s=duration, frame_count=int(count) if count.isdigit() else None,
                     codec=stream.get("codec_name", "?"), pix_fmt=stream.get("pix_fmt", "?"), rotation_deg=rotation,
                     variable_frame_rate=bool(average and nominal and abs(average - nominal) > 0.01 * nominal))


def decode_frames(path: Path, info: VideoInfo, fps: float | None = None, size: tuple[int, int] | None = None,
                  report: DecodeReport | None = None) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 RGB frames of `path`, rotation applied, decoded once in one ffmpeg process.

    `fps` None yields every decoded frame as it is (none duplicated or dropped); a rate resamples time with
    ffmpeg's fps filter (frame i is the source at time i / fps, evening out variable rates). `size`
    (width, height) scales with area averaging; None keeps the displayed size. UnusableVideo after the last
    good frame if ffmpeg fails or stops inside a frame; errors ffmpeg reports but survives (a damaged
    stretch, a truncated end) only land in `report.messages`.
    """
    report = report if report is not None else DecodeReport()
    width, height = size or (info.width_px, info.height_px)
    stream = ffmpeg.input(str(path)).video
    if fps is not None:
        stream = stream.filter("fps", fps=fps)
    if size is not None:
        stream = stream.filter("scale", width, height, flags="area")
    output = {"vsync": "passthrough"} if fps is None else {}
    command = (stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", **output)
               .global_args(*QUIET, "-threads", "1").compile())
    frame_bytes = width * height * 3
    with tempfile.TemporaryFile() as messages, subprocess.Popen(command, stdout=subprocess.PIPE,
                                                                stderr=messages) as process:
        try:
            while len(data := process.stdout.read(frame_bytes)) == frame_bytes:
                report.frames += 1
                yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
            returncode = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
        messages.seek(0)
        report.messages = messages.read().decode(errors="replace").strip().splitlines()
        if returncode != 0 or data:
            raise UnusableVideo(f"decoding failed: {report.messages[-1] if report.messages else 'no message'}")


def write_h264(path: Path, frames: Iterable[np.ndarray], frame_rate: str, crf: int = 18) -> int:
    """Encode (H, W, 3) uint8 RGB frames of one size into an H.264 mp4 at `frame_rate` (a number or a
    fraction such as '30000/1001'); returns their count.

    The frames stream into ffmpeg through a pipe; an odd side gains one black row or column (yuv420p
    needs even sizes). The file appears under `path` only when complete (`formats.files.atomic_path`).
    """
    count, encoder = 0, None
    with atomic_path(Path(path)) as tmp, tempfile.TemporaryFile() as stderr:
        try:
            for frame in frames:
                if encoder is None:
                    height, width = frame.shape[:2]
                    command = (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                                            framerate=str(frame_rate))
                               .filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
                               .output(str(tmp), format="mp4", vcodec="libx264", pix_fmt="yuv420p", crf=crf,
                                       preset="veryfast", movflags="+faststart")
                               .global_args(*QUIET).overwrite_output().compile())
                    encoder = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=stderr)
                encoder.stdin.write(np.ascontiguousarray(frame).tobytes())
                count += 1
            if encoder is None:
                raise ValueError(f"no frames to encode into {path}")
            encoder.stdin.close()
            failed = encoder.wait() != 0
        except BrokenPipeError:
            failed = True
        finally:
            if encoder is not None and encoder.poll() is None:
                encoder.kill()
                encoder.wait()
        if failed:
            stderr.seek(0)
            raise RuntimeError(f"ffmpeg could not encode {path}: {_last_line(stderr.read(), 'no message from ffmpeg')}")
    return count
