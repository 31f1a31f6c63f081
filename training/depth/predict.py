"""Depth from a transfer checkpoint: images, folders, videos and KITTI split frames.

Pictures show a frame beside its disparity in magma, from its minimum to its 95th percentile, as
Monodepth2's test_simple shows it: PNGs for images, an H.264 mp4 for a video, streamed frame by frame
(`formats.video`), so no video is held whole.
"""
import contextlib
import itertools
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch

from formats.files import atomic_path, write_bytes_atomic
from formats.kitti import SplitEntry, image_path
from formats.video import VideoInfo, decode_frames, write_h264
from training.checkpoints import TRANSFER, load_checkpoint
from training.depth.data import frame_tensor, read_rgb
from training.depth.networks import DepthNet, disp_to_depth


def colourise_disparity(disp: np.ndarray) -> np.ndarray:
    """(H, W) disparity -> (H, W, 3) uint8 RGB in magma, from its minimum to its 95th percentile (Monodepth2's
    pictures)."""
    vmax = float(np.percentile(disp, 95))
    vmin = float(disp.min())
    scaled = np.clip((disp - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    return cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)[..., ::-1].copy()



def read_transfer_checkpoint(checkpoint: Path | dict) -> dict:
    """A transfer checkpoint (path or already loaded); ValueError for any other file."""
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    if state.get("kind") != TRANSFER:
        raise ValueError(f"{checkpoint if not isinstance(checkpoint, dict) else 'the checkpoint'} is not a depth "
                         "transfer checkpoint (geopt-train transfer writes RUN/last.pt)")
    return state


def _device(device: str) -> torch.device:
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        "cpu" if device == "auto" else device)


class DepthPredictor:
    """The depth network of a transfer checkpoint, fed frames resized to `size` (W, H), by default the
    training size, without keeping their aspect (as Monodepth2's test_simple does)."""

    def __init__(self, checkpoint: Path | dict, size: tuple[int, int] | None = None, device: str = "auto"):
        state = read_transfer_checkpoint(checkpoint)
        self.width_px, self.height_px = size or (state["width_px"], state["height_px"])
        if self.width_px % 32 or self.height_px % 32:
            raise ValueError(f"size {self.width_px}x{self.height_px}: both sides must be multiples of 32")
        self.depth_range_m = (state["min_depth"], state["max_depth"])
        self.device = _device(device)
        self.net = DepthNet(state["arch"])
        self.net.load_state_dict({k[len("depth."):]: v for k, v in state["model"].items() if k.startswith("depth.")})
        self.net.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, frames_rgb: list[np.ndarray]) -> np.ndarray:
        """(H, W, 3) uint8 RGB frames of any sizes -> (N, height_px, width_px) float32 scaled disparities
        (`disp_to_depth`'s first output: 1 / depth in metres for S and MS models)."""
        batch = torch.stack([frame_tensor(rgb, self.width_px, self.height_px) for rgb in frames_rgb])
        scaled, _ = disp_to_depth(self.net(batch.to(self.device))[0], *self.depth_range_m)
        return scaled[:, 0].float().cpu().numpy()


def predict_stream(predictor: DepthPredictor, frames: Iterable[np.ndarray], batch_size: int = 8
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(frame, its disparity) for each of `frames`, predicted `batch_size` at a time; holds one batch."""
    frames = iter(frames)
    while batch := list(itertools.islice(frames, batch_size)):
        yield from zip(batch, predictor(batch))


def predict_disparities(checkpoint: Path | dict, images: list[Path] | list[SplitEntry],
                        size: tuple[int, int] | None = None, kitti_root: Path | None = None, batch_size: int = 8,
                        device: str = "auto") -> np.ndarray:
    """(N, H, W) float32 scaled disparities (see `DepthPredictor`) of image files or KITTI split entries
    (with `kitti_root`), at `size` (W, H), by default the training size."""
    paths = [image_path(kitti_root, item) if isinstance(item, SplitEntry) else Path(item) for item in images]
    if not paths:
        raise ValueError("no images to predict")
    frames = (read_rgb(path) for path in paths)
    pairs = predict_stream(DepthPredictor(checkpoint, size, device), frames, batch_size)
    return np.stack([disp for _, disp in pairs])


def side_by_side(rgb: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame and its (h, w) disparity -> (H, 2 W, 3) uint8 RGB: the frame, then the
    disparity resized to it (bilinear) and coloured by `colourise_disparity`, as Monodepth2's test_simple."""
    resized = cv2.resize(disp, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.concatenate([rgb, colourise_disparity(resized)], axis=1)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    assert ok, "OpenCV could not encode a PNG"
    write_bytes_atomic(path, encoded.tobytes())


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


@contextlib.contextmanager
def disparity_stack(path: Path) -> Iterator[Callable[[np.ndarray], None]]:
    """Yield `append`, which takes (h, w) disparities one at a time; on exit write them to `path` as one
    (N, h, w) float32 .npy. They wait in a temporary file meanwhile, so a whole video is never in memory."""
    shape, count = None, 0
    with tempfile.TemporaryFile(dir=Path(path).parent) as raw:
        def append(disp: np.ndarray) -> None:
            nonlocal shape, count
            assert shape in (None, disp.shape), f"disparity of shape {disp.shape} after {shape}"
            shape, count = disp.shape, count + 1
            raw.write(np.ascontiguousarray(disp, dtype="<f4").tobytes())

        yield append
        raw.seek(0)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            header = {"descr": "<f4", "fortran_order": False, "shape": (count, *(shape or (0, 0)))}
            np.lib.format.write_array_header_1_0(f, header)
            shutil.copyfileobj(raw, f)


def predict_images(predictor: DepthPredictor, paths: list[Path], out_dir: Path, names: list[str],
                   batch_size: int = 8, npy: str = "none", progress: Callable[[int], None] | None = None) -> None:
    """Write OUT/<name>_depth.png for each image: the image beside its coloured disparity (`side_by_side`).

    `npy` 'each' also writes OUT/<name>_disp.npy, the (h, w) scaled disparity at the network size (as
    Monodepth2's test_simple); 'stack' writes OUT/disps.npy, all of them as (N, h, w) in order (as its
    evaluate_depth --save_pred_disps, for ``geopt-train evaluate-disps``); 'none' writes neither.
    """
    assert len(names) == len(paths) and npy in ("none", "each", "stack")
    out_dir = Path(out_dir)
    with contextlib.ExitStack() as stack:
        append = stack.enter_context(disparity_stack(out_dir / "disps.npy")) if npy == "stack" else None
        pairs = predict_stream(predictor, (read_rgb(path) for path in paths), batch_size)
        for name, (rgb, disp) in zip(names, pairs):
            _write_png(out_dir / f"{name}_depth.png", side_by_side(rgb, disp))
            if npy == "each":
                _write_npy(out_dir / f"{name}_disp.npy", disp)
            elif append is not None:
                append(disp)
            if progress:
                progress(1)


def predict_video(predictor: DepthPredictor, path: Path, info: VideoInfo, out_path: Path, batch_size: int = 8,
                  npy_path: Path | None = None, progress: Callable[[int], None] | None = None) -> int:
    """Write `out_path`, an H.264 mp4 of every frame of the video `path` beside its coloured disparity, at
    the video's frame rate; with `npy_path` also its (frames, h, w) scaled disparities. Frames stream
    from decoder to encoder a batch at a time. Returns the number of frames."""
    with contextlib.ExitStack() as stack:
        frames = stack.enter_context(contextlib.closing(decode_frames(path, info)))
        append = stack.enter_context(disparity_stack(npy_path)) if npy_path is not None else None

        def pictures() -> Iterator[np.ndarray]:
            for rgb, disp in predict_stream(predictor, frames, batch_size):
                if append is not None:
                    append(disp)
                if progress:
                    progress(1)
                yield side_by_side(rgb, disp)

        return write_h264(out_path, pictures(), info.frame_rate)
