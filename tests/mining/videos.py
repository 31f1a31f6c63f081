"""Mining helpers: small videos with known content."""
from pathlib import Path

import ffmpeg
import numpy as np


def write_video(path: Path, frames, fps: float = 25.0, pix_fmt: str = "yuv420p", **output_args) -> Path:
    """Encode (H, W, 3) uint8 RGB frames to H.264 through ffmpeg."""
    frames = list(frames)
    h, w = frames[0].shape[:2]
    process = (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
               .output(str(path), vcodec="libx264", pix_fmt=pix_fmt, **output_args)
               .overwrite_output().run_async(pipe_stdin=True, quiet=True))
    for frame in frames:
        process.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
    process.stdin.close()
    assert process.wait() == 0
    return path


def textured(height: int, width: int, seed: int) -> np.ndarray:
    """A street-like picture larger than the frame, for panning across: grey detail at two scales with a
    mild tint, as photographs have (random saturated colours would look like a cut to every detector)."""
    import cv2
    rng = np.random.default_rng(seed)
    size = (width + 16, height + 16)
    coarse = cv2.resize(rng.normal(0, 40, (height // 24 + 2, width // 24 + 2)), size, interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.normal(0, 25, (height // 4 + 2, width // 4 + 2)), size, interpolation=cv2.INTER_CUBIC)
    grey = 120 + coarse + fine
    tint = np.array([1.05, 1.0, 0.92]) * (1 + 0.05 * rng.standard_normal(3))
    return np.clip(grey[..., None] * tint, 0, 255).astype(np.uint8)


def panning(count: int, height: int, width: int, seed: int, speed_px: float = 2.0):
    """`count` frames sliding across a textured picture by `speed_px` per frame (0: a still camera)."""
    canvas = textured(height, width + int(abs(speed_px) * count) + 8, seed)
    for i in range(count):
        x = int(round(i * speed_px))
        yield canvas[:height, x:x + width]
