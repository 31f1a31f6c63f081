"""The networks of the depth transfer, built as Monodepth2 builds them.

- `DepthNet`: the transferred `StructureEncoder` and a U-Net disparity decoder giving sigmoid disparities
  at 1, 1/2, 1/4 and 1/8 of the input size;
- `PoseNet`: its own ResNet18 over two frames stacked on channels (6 inputs), then a small convolutional
  decoder to an axis-angle rotation and a translation, both scaled by 0.01 as Monodepth2 does;
- `IntrinsicsHead`: a normalised focal length (square pixels) and principal point from the pose
  bottleneck, for video of unknown cameras;
- `DepthAndPose`: the three together, one forward per training step (one call under DDP).

Poses are (B, 4, 4) matrices taking points from the target camera's frame into the source camera's
frame (`formats.camera` conventions). Depth comes out in whatever unit the translations carry; with
the stereo baseline in metres (`training.depth.loss`) that is metres.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from formats.camera import KITTI_K_NORMALISED
from training.backbone import SCALES, ConvBlock, StructureEncoder

MIN_DEPTH, MAX_DEPTH = 0.1, 100.0
"""Monodepth2's depth range; in metres here."""
POSE_SCALE = 0.01
"""Monodepth2 multiplies the pose decoder's outputs by this, so a fresh network predicts almost no motion."""
TEMPORAL_FRAMES = (-1, 1)
"""Source frames whose pose the pose network predicts; the stereo partner 's' has a known pose."""


def disp_to_depth(disp: torch.Tensor, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid output in 0..1 -> (scaled disparity in 1/max_depth..1/min_depth, depth = 1 / scaled disparity)."""
    min_disp, max_disp = 1 / max_depth, 1 / min_depth
    scaled_disp = min_disp + (max_disp - min_disp) * disp
    return scaled_disp, 1 / scaled_disp


class DepthDecoder(nn.Module):
    """Encoder features -> {scale: (B, 1, H / 2^scale, W / 2^scale) sigmoid disparity} for scales 0..3.

    Five levels of (conv, x2 nearest upsampling, concatenation with the encoder's skip, conv), each conv
    3x3 with reflection padding and ELU; a 3x3 head with reflection padding and a sigmoid at each scale.
    """

    def __init__(self, encoder_channels: list[int]):
        super().__init__()
        self.widths = [16, 32, 64, 128, 256]
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for level in range(4, -1, -1):
            c_in = encoder_channels[-1] if level == 4 else self.widths[level + 1]
            self.up.append(ConvBlock(c_in, self.widths[level]))
            skip = encoder_channels[level - 1] if level > 0 else 0
            self.fuse.append(ConvBlock(self.widths[level] + skip, self.widths[level]))
        self.heads = nn.ModuleDict({str(s): nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(self.widths[s], 1, 3))
                                    for s in SCALES})

    def forward(self, features: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        x = features[-1]
        disps = {}
        for i, level in enumerate(range(4, -1, -1)):
            x = F.interpolate(self.up[i](x), scale_factor=2, mode="nearest")
            if level > 0:
                x = torch.cat([x, features[level - 1]], dim=1)
            x = self.fuse[i](x)
            if level in SCALES:
                disps[level] = torch.sigmoid(self.heads[str(level)](x))
        return disps


class DepthNet(nn.Module):
    """(B, 3, H, W) image in 0..1, H and W multiples of 32 -> {scale: sigmoid disparity} (see `DepthDecoder`).

    `freeze_encoder` makes it a probe of the encoder: its weights and BatchNorm statistics stay as loaded
    (it runs in eval mode, without gradients, whatever `train()` says), and only the decoder learns.
    """

    def __init__(self, arch: str = "resnet18"):
        super().__init__()
        self.encoder = StructureEncoder(arch)
        self.decoder = DepthDecoder(self.encoder.channels)
        self.encoder_frozen = False

    def freeze_encoder(self) -> None:
        self.encoder.requires_grad_(False)
        self.encoder_frozen = True
        self.encoder.eval()

    def train(self, mode: bool = True) -> "DepthNet":
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def forward(self, image: torch.Tensor) -> dict[int, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
            features = self.encoder(image)
        return self.decoder(features)


def rotation_from_axisangle(axisangle: torch.Tensor) -> torch.Tensor:
    """(B, 3) axis * angle in radians -> (B, 3, 3) rotation matrices (Rodrigues)."""
    angle = axisangle.norm(dim=1, keepdim=True)
    axis = axisangle / (angle + 1e-7)
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    c, s = torch.cos(angle[:, 0]), torch.sin(angle[:, 0])
    C = 1 - c
    rows = [[x * x * C + c, x * y * C - z * s, z * x * C + y * s],
            [x * y * C + z * s, y * y * C + c, y * z * C - x * s],
            [z * x * C - y * s, y * z * C + x * s, z * z * C + c]]
    return torch.stack([torch.stack(row, dim=1) for row in rows], dim=1)


def transformation_from_parameters(axisangle: torch.Tensor, translation: torch.Tensor, invert: bool = False
                                   ) -> torch.Tensor:
    """(B, 3) axis-angle and (B, 3) translation -> (B, 4, 4) rigid transform, x -> R x + t.

    `invert` gives the inverse transform, R^T (x - t): Monodepth2 predicts the pose of the pair
    (frame -1, frame 0) in time order and inverts it to map frame 0 into frame -1.
    """
    rotation = rotation_from_axisangle(axisangle)
    matrix = torch.zeros(axisangle.shape[0], 4, 4, dtype=axisangle.dtype, device=axisangle.device)
    matrix[:, 3, 3] = 1
    if invert:
        rotation = rotation.transpose(1, 2)
        matrix[:, :3, :3] = rotation
        matrix[:, :3, 3] = -(rotation @ translation.unsqueeze(-1)).squeeze(-1)
    else:
        matrix[:, :3, :3] = rotation
        matrix[:, :3, 3] = translation
    return matrix


class PoseDecoder(nn.Module):
    """(B, C, h, w) bottleneck -> (B, 3) axis-angle in radians and (B, 3) translation, both x `POSE_SCALE`."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, 256, 1)
        self.convs = nn.Sequential(nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 6, 1))

    def forward(self, bottleneck: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = POSE_SCALE * self.convs(self.squeeze(bottleneck)).mean(dim=(2, 3))
        return out[:, :3], out[:, 3:]


class PoseNet(nn.Module):
    """Two frames in time order, each (B, 3, H, W) in 0..1 -> (axis-angle, translation, bottleneck).

    The motion maps points of the first frame's camera into the second's. The encoder is a ResNet18 with
    a 6-channel first convolution; see `load_resnet_weights` for starting it from 3-channel weights.
    """

    def __init__(self):
        super().__init__()
        self.encoder = StructureEncoder("resnet18")
        self.encoder.resnet.conv1 = nn.Conv2d(6, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.encoder.resnet.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.decoder = PoseDecoder(self.encoder.channels[-1])

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bottleneck = self.encoder(torch.cat([first, second], dim=1))[-1]
        axisangle, translation = self.decoder(bottleneck)
        return axisangle, translation, bottleneck


class IntrinsicsHead(nn.Module):
    """Pose bottleneck (B, C, h, w) -> (B, 3, 3) intrinsics normalised by image size (see `formats.camera`).

    One focal length, a softplus-positive multiple of the prior `focal_x_prior` (fx / W; exactly the
    prior at initialisation), gives both fx / W and fy / H = fx / W * W / H: pixels are square (shard
    frames are cropped and resized so that they stay so). Tying them lets vertical motion (pitch, bumps)
    inform the focal length, which forward driving alone leaves almost unobservable: on world shards with
    true depth and motion, fx 30 % off raises the photometric loss by 0.3 %, fy 30 % off by 3 %. The
    principal point is a sigmoid in 0..1 of the image size (the centre at initialisation).
    """

    def __init__(self, in_channels: int, aspect_w_over_h: float, focal_x_prior: float = KITTI_K_NORMALISED[0, 0]):
        super().__init__()
        self.linear = nn.Linear(in_channels, 3)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("focal_prior", torch.tensor([focal_x_prior, focal_x_prior * aspect_w_over_h]))

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        raw = self.linear(bottleneck.mean(dim=(2, 3)))
        focal = self.focal_prior * F.softplus(raw[:, :1]) / math.log(2.0)
        principal = torch.sigmoid(raw[:, 1:])
        K = torch.zeros(raw.shape[0], 3, 3, dtype=raw.dtype, device=raw.device)
        K[:, 0, 0], K[:, 1, 1] = focal[:, 0], focal[:, 1]
        K[:, 0, 2], K[:, 1, 2] = principal[:, 0], principal[:, 1]
        K[:, 2, 2] = 1
        return K


def built_with_seed(factory, seed: int) -> nn.Module:
    """`factory()` with the CPU random stream seeded by `seed`; the global stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


class DepthAndPose(nn.Module):
    """Everything trained in one step: depth of frame 0, poses of frames -1 and +1, and maybe intrinsics.

    `temporal` False (stereo-only training) builds no pose network. `learned_intrinsics` adds an
    `IntrinsicsHead` whose predictions for the two pairs are averaged: both see the same camera.
    `pose_seed` draws the pose network's initial weights from their own seed, so that runs of any seed and
    any depth encoder start it alike; None draws them from the global stream, after the depth network's.
    """

    def __init__(self, arch: str = "resnet18", temporal: bool = True, learned_intrinsics: bool = False,
                 aspect_w_over_h: float = 640 / 192, focal_x_prior: float = KITTI_K_NORMALISED[0, 0],
                 pose_seed: int | None = None):
        super().__init__()
        if learned_intrinsics and not temporal:
            raise ValueError("learned intrinsics need the pose network, i.e. frames -1 and +1 (mode M or MS)")
        self.depth = DepthNet(arch)
        self.pose = (PoseNet() if pose_seed is None else built_with_seed(PoseNet, pose_seed)) if temporal else None
        self.intrinsics = (IntrinsicsHead(self.pose.encoder.channels[-1], aspect_w_over_h, focal_x_prior)
                           if learned_intrinsics else None)

    def forward(self, frames: dict) -> dict:
        """`frames`: {frame id: (B, 3, H, W) in 0..1} with 0 and, when temporal, -1 and 1.

        Returns 'disps' ({scale: (B, 1, h, w) sigmoid disparity}), 'poses' ({-1 or 1: (B, 4, 4) frame 0
        camera -> that frame's camera}) and, with learned intrinsics, 'K' ((B, 3, 3) normalised).
        """
        out = {"disps": self.depth(frames[0]), "poses": {}}
        if self.pose is None:
            return out
        intrinsics = []
        for frame_id in TEMPORAL_FRAMES:
            pair = (frames[frame_id], frames[0]) if frame_id < 0 else (frames[0], frames[frame_id])
            axisangle, translation, bottleneck = self.pose(*pair)
            with torch.autocast(device_type=axisangle.device.type, enabled=False):  # geometry in float32
                out["poses"][frame_id] = transformation_from_parameters(axisangle.float(), translation.float(),
                                                                        invert=frame_id < 0)
            if self.intrinsics is not None:
                intrinsics.append(self.intrinsics(bottleneck).float())
        if intrinsics:
            out["K"] = torch.stack(intrinsics).mean(dim=0)
        return out
