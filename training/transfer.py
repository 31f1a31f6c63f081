"""Transfer a backbone to monocular depth the Monodepth2 way, then predict and score depth with it.

The depth network's encoder starts from `init`: 'scratch', 'imagenet' (torchvision's weights, read only
from the local torch hub cache), 'geopt:PATH' (a backbone written by ``geopt-train export``), or PATH of a
checkpoint (a pretraining checkpoint's structure encoder, or a whole earlier transfer run, e.g. to
fine-tune at 1024x320 after 640x192 as Monodepth2 does). The pose network's ResNet18 starts from
`pose_init`, by default the same source (ImageNet's ResNet18 when that is 'imagenet').

Training is Monodepth2's: Adam at 1e-4 (not scaled with the number of processes), divided by 10 at 75 % of
the steps, modes M (frames -1, +1 with a learned pose), S (the stereo partner, known pose) and MS (both).
The run folder holds ``config.json``, ``last.pt`` (rewritten atomically every `checkpoint_every` steps and
at the end), ``log.jsonl`` and TensorBoard scalars and pictures (frame, coloured disparity). A step whose
loss or gradient is not finite is skipped; `nan_patience` in a row stop the run.

Evaluation is Monodepth2's (`training.evaluation`): per-image median scaling for M models; S and MS models
are scored as they predict (Monodepth2 turns median scaling off for every stereo-supervised model and
multiplies by 5.4 for its 0.1-unit baseline; ours is 0.54 m, so the factor is 1, see `training.depth_losses`).

Prediction pictures a frame beside its disparity in magma, from its minimum to its 95th percentile, as
Monodepth2's test_simple shows it: PNGs for images, an H.264 mp4 for a video, streamed frame by frame.
"""
import contextlib
import itertools
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch
import torchvision
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from geopt_io import append_jsonl, atomic_path, write_bytes_atomic, write_json_atomic
from training.depth_data import (FRAME_IDS, LoaderConfig, VideoInfo, fov_intrinsics, frame_tensor, parse_data_spec,
                                 read_rgb, read_video_frames, training_batches, write_h264)
from training.depth_losses import DepthLossConfig, depth_loss, depth_range_m
from training.depth_models import DepthAndPose, DepthNet, disp_to_depth, load_resnet_weights
from training.evaluation import evaluate_disparities
from training.export import encoder_state_dict
from training.geometry import KITTI_K_NORMALISED
from training.kitti import SplitEntry, image_path, load_gt_depths, read_split_file
from training.pretrain import TrainingDiverged
from training.runtime import (Runtime, all_ranks_agree, load_checkpoint, restore_rng_state, rng_state, save_checkpoint,
                              seed_everything, start_runtime, stop_runtime, unwrap)

CHECKPOINT_KIND = "depth-transfer"
IMAGENET_FILES = {"resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1],
                  "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]}
"""torchvision's file names in the hub cache: resnet18-f37072fd.pth, resnet50-0676ba61.pth."""
SCALINGS = ("auto", "median", "metric")


@dataclass
class TransferConfig:
    data: str
    """'kitti:PATH' or 'shards:SPEC' (see `training.depth_data`)."""
    run_dir: Path = Path("runs/transfer")
    split: str = "eigen_zhou"
    mode: str = "M"
    init: str = "imagenet"
    pose_init: str = "same"
    """'same' as `init` (a transfer checkpoint without a pose network leaves it to start from scratch),
    or 'scratch', 'imagenet', 'geopt:PATH' of a resnet18 backbone."""
    arch: str = "resnet18"
    width_px: int = 640
    height_px: int = 192
    batch_size: int = 12
    steps: int = 66_000
    """Monodepth2's 20 epochs of eigen_zhou (39 810 frames) at batch 12."""
    lr: float = 1e-4
    lr_decay_at: float = 0.75
    """Fraction of `steps` after which the learning rate is multiplied by `lr_decay`."""
    lr_decay: float = 0.1
    fov_deg: float | None = None
    """Horizontal field of view of shard frames; with learned intrinsics, the prior of the focal length."""
    intrinsics: str = "fixed"
    """'fixed': the data's intrinsics; 'learned': predicted per sample by `IntrinsicsHead`."""
    train_fraction: float = 1.0
    workers: int = 4
    device: str = "auto"
    precision: str = "auto"
    checkpoint_every: int = 1000
    log_every: int = 50
    image_every: int = 1000
    nan_patience: int = 20
    seed: int = 0
    resume: bool = False

    def loss_config(self) -> DepthLossConfig:
        """Monodepth2's loss, in the depth range of this mode (`depth_range_m`)."""
        min_depth, max_depth = depth_range_m(stereo="s" in FRAME_IDS[self.mode])
        return DepthLossConfig(min_depth=min_depth, max_depth=max_depth)

    def loader_config(self) -> LoaderConfig:
        return LoaderConfig(data=self.data, split=self.split, mode=self.mode, width_px=self.width_px,
                            height_px=self.height_px, batch_size=self.batch_size, workers=self.workers,
                            fov_deg=self.fov_deg, train_fraction=self.train_fraction, seed=self.seed)


def check_config(config: TransferConfig) -> None:
    """Raise ValueError (one line) for settings that cannot train."""
    parse_data_spec(config.data)
    if config.mode not in FRAME_IDS:
        raise ValueError(f"mode must be M, S or MS, got {config.mode!r}")
    if config.intrinsics not in ("fixed", "learned"):
        raise ValueError(f"intrinsics must be fixed or learned, got {config.intrinsics!r}")
    if config.intrinsics == "learned" and config.mode == "S":
        raise ValueError("learned intrinsics need frames -1 and +1: use mode M or MS")
    if config.fov_deg is not None and not 0 < config.fov_deg < 180:
        raise ValueError(f"fov_deg must be between 0 and 180, got {config.fov_deg}")
    if config.width_px % 32 or config.height_px % 32:
        raise ValueError(f"size {config.width_px}x{config.height_px}: both sides must be multiples of 32")
    if not 0 < config.train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {config.train_fraction}")


# --- initial weights ---------------------------------------------------------------------------------

def imagenet_weights(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for `arch` from the local torch hub cache; never downloads."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = [folder / IMAGENET_FILES[arch]] + sorted(folder.glob(f"{arch}-*.pth"))
    for path in candidates:
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
    raise ValueError(f"ImageNet weights for {arch} are not in the torch hub cache (expected {candidates[0]}); "
                     "copy them there or choose another init - they are never downloaded")


def _initial_weights(source: str, arch: str) -> dict:
    """`source` -> {'encoder': torchvision ResNet weights} or {'depth': ..., 'pose': ...} state dicts, or {}."""
    if source == "scratch":
        return {}
    if source == "imagenet":
        return {"encoder": imagenet_weights(arch)}
    path = Path(source.removeprefix("geopt:"))
    if not path.is_file():
        raise ValueError(f"init {source!r}: no file {path}")
    if source.startswith("geopt:"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {"encoder": {k.removeprefix("encoder."): v for k, v in state.items() if isinstance(v, torch.Tensor)}}
    state = load_checkpoint(path)
    if state.get("kind") == CHECKPOINT_KIND:
        parts = {"depth": {}, "pose": {}}
        for key, value in state["model"].items():
            part, _, name = key.partition(".")
            if part in parts:
                parts[part][name] = value
        return {k: v for k, v in parts.items() if v}
    return {"encoder": encoder_state_dict(state)}


def build_model(config: TransferConfig, load_init: bool = True) -> DepthAndPose:
    """The networks for `config`, starting from `init` and `pose_init` when `load_init`."""
    prior = fov_intrinsics(config.fov_deg, 1, 1)[0, 0] if config.fov_deg is not None else KITTI_K_NORMALISED[0, 0]
    model = DepthAndPose(config.arch, temporal=config.mode != "S", learned_intrinsics=config.intrinsics == "learned",
                         aspect_w_over_h=config.width_px / config.height_px, focal_x_prior=prior)
    if not load_init:
        return model
    weights = _initial_weights(config.init, config.arch)
    try:
        if "depth" in weights:
            model.depth.load_state_dict(weights["depth"])
        elif "encoder" in weights:
            load_resnet_weights(model.depth.encoder, weights["encoder"])
    except RuntimeError:
        raise ValueError(f"init {config.init!r} does not hold {config.arch} weights") from None
    if model.pose is not None:
        pose_source = config.init if config.pose_init == "same" else config.pose_init
        if pose_source != config.init or (pose_source == "imagenet" and config.arch != "resnet18"):
            weights = _initial_weights(pose_source, "resnet18")
        try:
            if "pose" in weights:
                model.pose.load_state_dict(weights["pose"])
            elif "encoder" in weights:
                load_resnet_weights(model.pose.encoder, weights["encoder"])
        except RuntimeError:
            raise ValueError(f"the pose encoder is a ResNet18 and {pose_source!r} holds other weights; "
                             "choose pose_init scratch, imagenet or geopt:PATH of a resnet18 backbone") from None
    return model


# --- training ----------------------------------------------------------------------------------------

def _to_device(batch: dict, runtime: Runtime) -> dict:
    """Tensors of a batch onto the device (images channels_last where the runtime wants it); sample keys
    and other non-tensors stay as they are."""
    def move(x):
        if isinstance(x, dict):
            return {k: move(v) for k, v in x.items()}
        if not isinstance(x, torch.Tensor):
            return x
        x = x.to(runtime.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if runtime.channels_last and x.dim() == 4 else x
    return move(batch)


def _step_losses(model, batch: dict, config: TransferConfig, runtime: Runtime) -> dict:
    """Forward the networks on the augmented frames, score the synthesis of the original target."""
    with runtime.autocast():
        out = model(batch["frames_aug"])
    disps = {s: d.float() for s, d in out["disps"].items()}
    transforms = {f: T.float() for f, T in out["poses"].items()}
    if "stereo_T" in batch:
        transforms["s"] = batch["stereo_T"]
    if config.intrinsics == "fixed" and "K" not in batch:
        raise ValueError("these shard samples carry no known intrinsics: give fov_deg (--fov-deg) or use "
                         "learned intrinsics (--intrinsics learned)")
    K = out["K"].float() if config.intrinsics == "learned" else batch["K"]
    frames = batch["frames"]
    losses = depth_loss(frames[0], {f: frames[f] for f in transforms}, transforms, disps, K, config.loss_config())
    return {**losses, "disp": disps[0].detach(), "K": K.detach()}


def colourise_disparity(disp: np.ndarray) -> np.ndarray:
    """(H, W) disparity -> (H, W, 3) uint8 RGB in magma, from its minimum to its 95th percentile (Monodepth2's
    pictures)."""
    vmax = float(np.percentile(disp, 95))
    vmin = float(disp.min())
    scaled = np.clip((disp - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    return cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)[..., ::-1].copy()


def _log_images(writer: SummaryWriter, step: int, batch: dict, out: dict) -> None:
    n = min(4, out["disp"].shape[0])
    writer.add_images("frame", batch["frames"][0][:n].float().cpu(), step)
    coloured = np.stack([colourise_disparity(d[0]) for d in out["disp"][:n].cpu().numpy()])
    writer.add_images("disparity", coloured, step, dataformats="NHWC")


def transfer(config: TransferConfig) -> dict:
    """Train (or resume) depth from `config.init`; returns the final step and last losses."""
    check_config(config)
    runtime = start_runtime(config.device, config.precision)
    try:
        return _transfer(config, runtime)
    finally:
        stop_runtime()


def _transfer(config: TransferConfig, runtime: Runtime) -> dict:
    run_dir = Path(config.run_dir)
    last = run_dir / "last.pt"
    resuming = config.resume and last.is_file()
    seed_everything(config.seed + runtime.rank)
    model = build_model(config, load_init=not resuming).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, [int(config.lr_decay_at * config.steps)],
                                                     config.lr_decay)
    step = 0
    if resuming:
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        restore_rng_state(state["rng"])
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", {**asdict(config), "world_size": runtime.world_size,
                                                    "global_batch": config.batch_size * runtime.world_size,
                                                    "started_at_step": step})
    train_model = model
    if runtime.world_size > 1:
        train_model = DistributedDataParallel(
            model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)

    loss_config = config.loss_config()

    def checkpoint() -> None:
        if runtime.is_main:
            save_checkpoint(last, {"kind": CHECKPOINT_KIND, "step": step, "model": unwrap(model).state_dict(),
                                   "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
                                   "rng": rng_state(), "config": asdict(config), "arch": config.arch,
                                   "mode": config.mode, "width_px": config.width_px, "height_px": config.height_px,
                                   "min_depth": loss_config.min_depth, "max_depth": loss_config.max_depth})

    batches = training_batches(config.loader_config(), runtime.rank, runtime.world_size, start_batch=step)
    writer = SummaryWriter(str(run_dir / "tensorboard")) if runtime.is_main else None
    progress = tqdm(total=config.steps, initial=step, unit="step", desc=f"transfer {config.mode}",
                    disable=not runtime.is_main)
    bad_in_a_row, last_scalars = 0, {}
    started, samples = time.perf_counter(), 0
    train_model.train()
    while step < config.steps:
        batch = _to_device(next(batches), runtime)
        out = _step_losses(train_model, batch, config, runtime)
        optimiser.zero_grad(set_to_none=True)
        finite = all_ranks_agree(bool(torch.isfinite(out["loss"])), runtime)
        if finite:
            out["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(train_model.parameters(), float("inf"))
            finite = all_ranks_agree(bool(torch.isfinite(grad_norm)), runtime)
        if not finite:
            optimiser.zero_grad(set_to_none=True)
            bad_in_a_row += 1
            if bad_in_a_row >= config.nan_patience:
                raise TrainingDiverged(f"loss or gradient was not finite for {bad_in_a_row} steps in a row at step "
                                       f"{step}; stopped. The last good checkpoint is {last} - lower the lr or "
                                       "check the data.")
            continue
        bad_in_a_row = 0
        optimiser.step()
        scheduler.step()
        step += 1
        samples += out["disp"].shape[0] * runtime.world_size
        progress.update(1)
        if step % config.log_every == 0 or step == config.steps:
            last_scalars = {"step": step, "loss": float(out["loss"].detach()),
                            "photometric": float(out["photometric"]), "smoothness": float(out["smoothness"]),
                            "automask_kept": float(out["automask"]), "lr": scheduler.get_last_lr()[0],
                            "grad_norm": float(grad_norm), "samples_per_s": samples / (time.perf_counter() - started)}
            if config.intrinsics == "learned":
                last_scalars["fx_normalised"] = float(out["K"][:, 0, 0].mean())
            progress.set_postfix(loss=f"{last_scalars['loss']:.4f}")
            if writer:
                for key, value in last_scalars.items():
                    if key != "step":
                        writer.add_scalar(f"train/{key}", value, step)
                append_jsonl(run_dir / "log.jsonl", last_scalars)
        if writer and (step % config.image_every == 0 or step == 1):
            _log_images(writer, step, batch, out)
        if step % config.checkpoint_every == 0:
            checkpoint()
    checkpoint()
    progress.close()
    if writer:
        writer.close()
    return {"step": step, **last_scalars, "run_dir": str(run_dir)}


# --- prediction and evaluation -----------------------------------------------------------------------

def read_transfer_checkpoint(checkpoint: Path | dict) -> dict:
    """A transfer checkpoint (path or already loaded); ValueError for any other file."""
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    if state.get("kind") != CHECKPOINT_KIND:
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


def evaluation_scaling(mode: str) -> str:
    """Monodepth2's choice: 'median' per-image scaling for monocular models, 'metric' for stereo-supervised ones."""
    return "median" if mode == "M" else "metric"


def evaluate_checkpoint(checkpoint_path: Path | dict, kitti_root: Path, split: str = "eigen", scaling: str = "auto",
                        batch_size: int = 8, device: str = "auto") -> tuple[dict[str, float], np.ndarray]:
    """Monodepth2's errors of a transfer checkpoint on splits/<split>/test_files.txt against gt_depths.npz.

    `scaling` 'auto' follows `evaluation_scaling` of the checkpoint's mode; 'median' scales each image by
    median(gt) / median(pred); 'metric' uses depth as predicted (Monodepth2's --eval_stereo with a stereo
    factor of 0.54 m / 0.54 m = 1). Returns the mean errors and the median-scaling ratios (empty if metric).
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    state = read_transfer_checkpoint(checkpoint_path)
    split_dir = Path(kitti_root) / "splits" / split
    entries = read_split_file(split_dir / "test_files.txt")
    gt_depths_m = load_gt_depths(split_dir / "gt_depths.npz")
    disps = predict_disparities(state, entries, kitti_root=kitti_root, batch_size=batch_size, device=device)
    if scaling == "auto":
        scaling = evaluation_scaling(state["mode"])
    return evaluate_disparities(disps, gt_depths_m, median_scaling=scaling == "median")


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
        frames = stack.enter_context(contextlib.closing(read_video_frames(path, info)))
        append = stack.enter_context(disparity_stack(npy_path)) if npy_path is not None else None

        def pictures() -> Iterator[np.ndarray]:
            for rgb, disp in predict_stream(predictor, frames, batch_size):
                if append is not None:
                    append(disp)
                if progress:
                    progress(1)
                yield side_by_side(rgb, disp)

        return write_h264(out_path, pictures(), info.frame_rate)
