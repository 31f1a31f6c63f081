"""Transfer a backbone to monocular depth the Monodepth2 way.

The depth network's encoder starts from `init`: 'scratch', 'imagenet' (torchvision's weights, read only
from the local torch hub cache), 'geopt:PATH' (a backbone written by ``geopt-train export``), or PATH of a
checkpoint (a pretraining checkpoint's structure encoder, or a whole earlier transfer run, e.g. to
fine-tune at 1024x320 after 640x192 as Monodepth2 does). The pose network's ResNet18 starts from
`pose_init`, by default the same source (ImageNet's ResNet18 when that is 'imagenet'); `pose_seed` draws a
pose network from scratch alike in every run, whatever its seed and depth encoder. `freeze_encoder` makes
the transfer a probe of what the encoder holds: only the depth decoder (and the pose network) learn.

Training is Monodepth2's: Adam at 1e-4 (not scaled with the number of processes), divided by 10 at 75 % of
the steps, modes M (frames -1, +1 with a learned pose), S (the stereo partner, known pose) and MS (both).
Against the no-motion collapse of short budgets (`training.depth.collapse`) a run may add a linear
learning-rate warm-up (`warmup_steps`), score every pixel without auto-masking for its first
`automask_after` steps, and set its own depth range; the defaults are Monodepth2's, and `stable_recipe`
sets the measured reliable ones. Each logged step
records the auto-mask's kept share, the mean predicted translation and the disparity's spread, and the
result says whether the run ended collapsed and when it left that state.
`training.loop` runs it: the run folder holds ``config.json``, ``last.pt``, ``log.jsonl`` and TensorBoard
scalars and pictures (frame, coloured disparity); non-finite steps are skipped.

Evaluation (`training.depth.evaluate`) is Monodepth2's: per-image median scaling for M models; S and MS
models are scored as they predict (Monodepth2 turns median scaling off for every stereo-supervised model
and multiplies by 5.4 for its 0.1-unit baseline; ours is 0.54 m, so the factor is 1, see
`training.depth.loss`).
"""
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.tensorboard import SummaryWriter

from formats.camera import KITTI_K_NORMALISED, fov_intrinsics
from formats.files import read_jsonl
from training.backbone import load_resnet_weights
from training.checkpoints import TRANSFER, load_checkpoint
from training.depth.data import FRAME_IDS, LoaderConfig, parse_data_spec, training_batches
from training.depth.loss import DepthLossConfig, depth_loss, depth_range_m
from training.depth.collapse import collapse_verdict
from training.depth.networks import DepthAndPose, disp_to_depth
from training.depth.predict import colourise_disparity
from training.flow.export import encoder_state_dict
from training.loop import LoopConfig, Task, train
from training.runtime import Runtime

IMAGENET_FILES = {"resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1],
                  "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]}
"""torchvision's file names in the hub cache: resnet18-f37072fd.pth, resnet50-0676ba61.pth."""


@dataclass(kw_only=True)
class TransferConfig(LoopConfig):
    data: str
    """'kitti:PATH' or 'shards:SPEC' (see `training.depth.data`)."""
    run_dir: Path = Path("runs/transfer")
    split: str = "eigen_zhou"
    mode: str = "M"
    init: str = "imagenet"
    pose_init: str = "same"
    """'same' as `init` (a transfer checkpoint without a pose network leaves it to start from scratch),
    or 'scratch', 'imagenet', 'geopt:PATH' of a resnet18 backbone."""
    pose_seed: int | None = None
    """Seed of the pose network's initial weights (before any `pose_init` weights load over its encoder);
    None: drawn from the run's `seed` after the depth network, as Monodepth2 does."""
    freeze_encoder: bool = False
    """Train only the depth decoder and the pose network; the depth encoder stays as `init` gave it."""
    warmup_steps: int = 0
    """Steps of linear learning-rate warm-up from lr / warmup_steps to lr; 0: none (Monodepth2)."""
    automask_after: int = 0
    """Steps scored without auto-masking (every pixel by its best warped source) before it starts."""
    min_depth: float | None = None
    """Depth range of the sigmoid disparity in the depth unit; None: the mode's (`depth_range_m`)."""
    max_depth: float | None = None
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

    def depth_range(self) -> tuple[float, float]:
        """(min, max) depth: the given ones, else the mode's (`depth_range_m`)."""
        default_min, default_max = depth_range_m(stereo="s" in FRAME_IDS[self.mode])
        return (default_min if self.min_depth is None else self.min_depth,
                default_max if self.max_depth is None else self.max_depth)

    def loss_config(self, step: int = 0) -> DepthLossConfig:
        """Monodepth2's loss in `depth_range`, for the step that `step` steps have preceded."""
        min_depth, max_depth = self.depth_range()
        return DepthLossConfig(min_depth=min_depth, max_depth=max_depth, automask=step >= self.automask_after)

    def loader_config(self) -> LoaderConfig:
        return LoaderConfig(data=self.data, split=self.split, mode=self.mode, width_px=self.width_px,
                            height_px=self.height_px, batch_size=self.batch_size, workers=self.workers,
                            fov_deg=self.fov_deg, train_fraction=self.train_fraction, seed=self.seed)


RECIPE_FIELDS = ("pose_init", "pose_seed", "warmup_steps", "automask_after")


def stable_recipe(config: TransferConfig, keep: frozenset[str] = frozenset()) -> TransferConfig:
    """Monodepth2's training made reliable at short budgets (`bench/transfer_collapse.py`): in M and MS
    mode a pose network from scratch drawn from seed 0, the same in every run whatever its seed and depth
    encoder, so arms differ only by their encoder; a learning-rate warm-up over the first 15 % of the steps;
    every pixel scored without auto-masking for the first 30 %. Fields named in `keep` (given explicitly)
    stay as they are."""
    settings = {"warmup_steps": max(1, config.steps * 15 // 100), "automask_after": config.steps * 30 // 100}
    if -1 in FRAME_IDS.get(config.mode, ()):  # S mode has no pose network
        settings.update(pose_init="scratch", pose_seed=0)
    return replace(config, **{k: v for k, v in settings.items() if k not in keep})


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
    if config.mode == "S" and (config.pose_init != "same" or config.pose_seed is not None):
        raise ValueError("no pose network in S mode: pose_init and pose_seed (--pose-init, --pose-seed) need M or MS")
    if config.warmup_steps < 0 or config.automask_after < 0:
        raise ValueError("warmup_steps and automask_after must be 0 or more")
    min_depth, max_depth = config.depth_range()
    if not 0 < min_depth < max_depth:
        raise ValueError(f"depth range {min_depth}..{max_depth}: need 0 < min_depth < max_depth")


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
    if state.get("kind") == TRANSFER:
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
                         aspect_w_over_h=config.width_px / config.height_px, focal_x_prior=prior,
                         pose_seed=config.pose_seed)
    if config.freeze_encoder:
        model.depth.freeze_encoder()
    if load_init:
        _load_initial_weights(model, config)
    return model


def _load_initial_weights(model: DepthAndPose, config: TransferConfig) -> None:
    """`init` into the depth network, `pose_init` into the pose network."""
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


# --- training ----------------------------------------------------------------------------------------

def to_device(batch: dict, runtime: Runtime) -> dict:
    """Tensors of a batch onto the device (images channels_last where the runtime wants it); other
    values stay as they are."""
    def move(x):
        if isinstance(x, dict):
            return {k: move(v) for k, v in x.items()}
        if not isinstance(x, torch.Tensor):
            return x
        x = x.to(runtime.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if runtime.channels_last and x.dim() == 4 else x
    return move(batch)


def depth_losses(model, batch: dict, config: TransferConfig, runtime: Runtime, step: int = 0) -> dict:
    """Forward the networks on the augmented frames of a batch (on the device), score the synthesis of
    the original target; `step` steps came before this one. Returns `depth_loss`'s terms, 'disp' (scale
    0), the 'K' used, and for the collapse watch 'translation' (mean |translation| of the predicted poses,
    in the depth unit; absent in S) and 'disparity_spread' (`disparity_spread`)."""
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
    loss_config = config.loss_config(step)
    losses = depth_loss(frames[0], {f: frames[f] for f in transforms}, transforms, disps, K, loss_config,
                        batch.get("visible"))
    watch = {"disparity_spread": disparity_spread(disps[0].detach(), loss_config)}
    if out["poses"]:
        watch["translation"] = torch.stack([T[:, :3, 3].detach().norm(dim=1) for T in out["poses"].values()]).mean()
    return {**losses, **watch, "disp": disps[0].detach(), "K": K.detach()}


def disparity_spread(disp: torch.Tensor, loss_config: DepthLossConfig) -> torch.Tensor:
    """(B, 1, H, W) sigmoid disparity -> std over pixels / mean of 1 / depth, averaged over the batch: near 0
    for the flat output of a network that learns no depth, whatever the depth unit."""
    scaled, _ = disp_to_depth(disp.float(), loss_config.min_depth, loss_config.max_depth)
    flat = scaled.flatten(1)
    return (flat.std(dim=1) / flat.mean(dim=1)).mean()


def learning_rate_schedule(optimiser: torch.optim.Optimizer, config: TransferConfig):
    """x `lr_decay` after `lr_decay_at` of the steps (Monodepth2's MultiStepLR, as it is without warm-up),
    after a linear warm-up over the first `warmup_steps`."""
    milestone = int(config.lr_decay_at * config.steps)
    if not config.warmup_steps:
        return torch.optim.lr_scheduler.MultiStepLR(optimiser, [milestone], config.lr_decay)

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / config.warmup_steps) * (config.lr_decay if step >= milestone else 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


class TransferTask(Task):
    """The depth transfer as `training.loop` runs it. Batches are `training.depth.data` sample dicts."""

    kind = TRANSFER

    def __init__(self, config: TransferConfig):
        self.config, self.batch_size, self.source = config, config.batch_size, config.data

    def build(self, runtime: Runtime, resuming: bool) -> torch.nn.Module:
        return build_model(self.config, load_init=not resuming).to(runtime.device)

    def optimiser(self, model, runtime: Runtime):
        trained = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.Adam(trained, lr=self.config.lr, fused=True)
        return optimiser, learning_rate_schedule(optimiser, self.config)

    def batches(self, runtime: Runtime, step: int, epoch: int):
        return training_batches(self.config.loader_config(), runtime.rank, runtime.world_size, start_batch=step)

    def samples_in(self, batch) -> int:
        return batch["frames"][0].shape[0]

    def blank_batch(self):
        return None  # KITTI and shard batches never run out: every rank always has a batch

    def losses(self, model, batch, runtime: Runtime) -> dict:
        return depth_losses(model, to_device(batch, runtime), self.config, runtime, self.step) | {"frame": batch["frames"][0]}

    def scalars(self, out: dict) -> dict[str, float]:
        scalars = {"loss": float(out["loss"].detach()), "photometric": float(out["photometric"]),
                   "smoothness": float(out["smoothness"]), "automask_kept": float(out["automask"]),
                   "disparity_spread": float(out["disparity_spread"])}
        if "translation" in out:
            scalars["translation"] = float(out["translation"])
        if self.config.intrinsics == "learned":
            scalars["fx_normalised"] = float(out["K"][:, 0, 0].mean())
        return scalars

    def pictures(self, writer: SummaryWriter, step: int, batch, out: dict) -> None:
        n = min(4, out["disp"].shape[0])
        writer.add_images("frame", out["frame"][:n].float().cpu(), step)
        coloured = np.stack([colourise_disparity(d[0]) for d in out["disp"][:n].cpu().numpy()])
        writer.add_images("disparity", coloured, step, dataformats="NHWC")

    def facts(self) -> dict:
        min_depth, max_depth = self.config.depth_range()
        return {"arch": self.config.arch, "mode": self.config.mode, "width_px": self.config.width_px,
                "height_px": self.config.height_px, "min_depth": min_depth, "max_depth": max_depth}


def transfer(config: TransferConfig) -> dict:
    """Train (or resume) depth from `config.init`; returns the final step, last losses and 'collapse'
    (`training.depth.collapse.CollapseVerdict` over the run's whole log, None where this process wrote
    no log)."""
    check_config(config)
    result = train(TransferTask(config), config)
    log_path = Path(config.run_dir) / "log.jsonl"
    return result | {"collapse": collapse_verdict(read_jsonl(log_path)) if log_path.is_file() else None}
