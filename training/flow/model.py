"""The geometric-pretraining model: structure encoder, motion encoder, flow decoder.

The structure encoder (a stock torchvision ResNet) sees the target frame only. The motion encoder sees
both frames but must squeeze what it learns into a narrow code (`motion_dim`, 128 by default) with no
spatial layout, so it can carry the camera's motion but not the scene. The decoder turns the structure
features (skip connections at every scale) into optical flow, modulated by the code at every level:
to predict flow for every pixel it needs each pixel's depth, which only the structure encoder can give.
A motion head adds a coarse 4x12 flow field read off the code alone (`MotionHead`): the camera's motion
in broad strokes, from the first step. Too coarse to say which pixels are near, it leaves per-pixel depth
to the structure encoder.
"""
import torch
import torch.nn.functional as F
from torch import nn

from training.backbone import IMAGE_MEAN, IMAGE_STD, SCALES, ConvBlock, StructureEncoder

FLOW_SCALE_PX = 10.0
"""Decoder outputs are multiplied by this: flow in pixels stays near unit scale inside the network."""
MOTION_HEAD_GRID = (4, 12)
"""Rows and columns of the coarse flow field the motion head reads off the code alone."""


class MotionEncoder(nn.Module):
    """Both frames (B, 6, H, W) -> a (B, motion_dim) code: strided convs, then global average pooling."""

    def __init__(self, motion_dim: int = 128):
        super().__init__()
        widths = [6, 32, 64, 128, 256, 256]
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], motion_dim)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        x = torch.cat([target, source], dim=1)
        x = self.convs((x - IMAGE_MEAN) / IMAGE_STD)
        return self.head(x.mean(dim=(2, 3)))


class ModulatedUNet(nn.Module):
    """U-Net decoder trunk over the structure features, each level scaled and shifted by the motion code
    (FiLM) when `motion_dim` > 0; yields each scale's features for the heads of `FlowDecoder` and
    `InverseDepthDecoder`."""

    def __init__(self, encoder_channels: list[int], motion_dim: int = 128, film_starts_identity: bool = True):
        super().__init__()
        self.widths = [16, 32, 64, 128, 256]
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        self.film = nn.ModuleList()
        for level in range(4, -1, -1):
            c_in = encoder_channels[-1] if level == 4 else self.widths[level + 1]
            self.up.append(ConvBlock(c_in, self.widths[level]))
            skip = encoder_channels[level - 1] if level > 0 else 0
            self.fuse.append(ConvBlock(self.widths[level] + skip, self.widths[level]))
            if motion_dim:
                self.film.append(nn.Linear(motion_dim, 2 * self.widths[level]))
        if film_starts_identity:
            for film in self.film:
                nn.init.zeros_(film.weight)
                nn.init.zeros_(film.bias)

    def levels(self, features: list[torch.Tensor], code: torch.Tensor | None):
        """Yields (scale, features (B, widths[scale], H / 2^scale, W / 2^scale)) for each of `SCALES`,
        coarsest first."""
        x = features[-1]
        for i, level in enumerate(range(4, -1, -1)):
            # to the skip's size: inputs that are not multiples of 32 (full-image warping's centre crops)
            # have odd feature maps, which ResNet's strides round up
            size = features[level - 1].shape[-2:] if level > 0 else [2 * n for n in x.shape[-2:]]
            x = F.interpolate(self.up[i](x), size=size, mode="nearest")
            if level > 0:
                x = torch.cat([x, features[level - 1]], dim=1)
            x = self.fuse[i](x)
            if self.film:
                gamma, beta = self.film[i](code).chunk(2, dim=1)
                x = x * (1 + gamma[..., None, None]) + beta[..., None, None]
            if level in SCALES:
                yield level, x


class FlowDecoder(ModulatedUNet):
    """The structure features, modulated by the motion code at every level, -> flow at every scale.

    With `coarse_to_fine`, each scale's flow is the coarser scale's flow upsampled plus this scale's head:
    the finer heads only refine, within the few pixels their own images can resolve, a motion the coarse
    scales found where it is a pixel or two long (PWC-Net's and UFlow's accumulated flow, without their
    cost volume: this decoder never sees the source frame)."""

    def __init__(self, encoder_channels: list[int], motion_dim: int = 128, film_starts_identity: bool = True,
                 coarse_to_fine: bool = False, stretch: bool = False):
        super().__init__(encoder_channels, motion_dim, film_starts_identity)
        self.coarse_to_fine = coarse_to_fine
        self.heads = nn.ModuleDict({str(s): nn.Conv2d(self.widths[s], 2, 3, padding=1) for s in SCALES})
        if coarse_to_fine:  # the finer heads start as refinements that add nothing to the coarsest flow
            for scale in SCALES[:-1]:
                nn.init.zeros_(self.heads[str(scale)].weight)
                nn.init.zeros_(self.heads[str(scale)].bias)
        self.stretch_heads = None
        if stretch:  # start at zero: the net starts as one without them
            self.stretch_heads = nn.ModuleDict({str(s): nn.Conv2d(self.widths[s], 1, 3, padding=1) for s in SCALES})
            for head in self.stretch_heads.values():
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def forward(self, features: list[torch.Tensor], code: torch.Tensor) -> dict[int, torch.Tensor]:
        """-> {scale: (B, 2, H / 2^scale, W / 2^scale) flow (du, dv) in input-image pixels}; with `stretch` a
        third channel, the logit of each pixel's stretch (`GeoPtFlowModel`)."""
        flows = {}
        for level, x in self.levels(features, code):
            flow = self.heads[str(level)](x) * FLOW_SCALE_PX
            if self.coarse_to_fine and level + 1 in flows:  # flow in input pixels: resizing keeps its values
                flow = flow + F.interpolate(flows[level + 1][:, :2], size=flow.shape[-2:], mode="bilinear",
                                            align_corners=False)
            if self.stretch_heads is not None:
                flow = torch.cat([flow, self.stretch_heads[str(level)](x)], dim=1)
            flows[level] = flow
        return flows


class InverseDepthDecoder(ModulatedUNet):
    """The structure features alone (no motion code) -> a positive inverse depth (B, 1, H / 2^s, W / 2^s)
    at every scale s, up to one unknown factor per pair that `RigidFlow`'s translation absorbs."""

    def __init__(self, encoder_channels: list[int]):
        super().__init__(encoder_channels, motion_dim=0)
        self.heads = nn.ModuleDict({str(s): nn.Conv2d(self.widths[s], 1, 3, padding=1) for s in SCALES})

    def forward(self, features: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        return {level: F.softplus(self.heads[str(level)](x)) for level, x in self.levels(features, None)}


class RigidFlow(nn.Module):
    """The flow of a still scene under the camera's translation (`translation_flow_px`): inverse depth from
    the target frame alone, the translation (sideways in units of 10 px, forward) from the motion code
    alone, through a linear layer that starts at zero. The focal length, the principal point and the
    inverse depth's unknown scale are absorbed by the translation. Rotation moves pixels whatever their
    depth, which `MotionHead`'s coarse field already covers.

    Why: a pixel whose match leaves the view going forward (the near road at the bottom, near walls at the
    sides) is in view going backward, since pretraining pairs each frame with both neighbours. A flow
    decoder learns each direction's flow separately, so nothing tells it where that pixel goes forward;
    here the one inverse depth the backward pairs teach sets the forward flow too, including the
    1 / (1 - rho * tau) by which a near pixel moves further going forward than coming back."""

    MAX_DEPTH_RATIO = 0.8
    """rho * tau is capped here: 1 would put the point on the camera's next position."""

    def __init__(self, encoder_channels: list[int], motion_dim: int = 128, bias: bool = True):
        super().__init__()
        self.inverse_depth = InverseDepthDecoder(encoder_channels)
        self.translation = nn.Linear(motion_dim, 3, bias=bias)
        nn.init.zeros_(self.translation.weight)  # starts adding no flow; the code's gradient reaches it at once
        if bias:
            nn.init.zeros_(self.translation.bias)

    def forward(self, features: list[torch.Tensor], code: torch.Tensor,
                input_size: tuple[int, int]) -> dict[int, torch.Tensor]:
        """-> {scale: (B, 2, H / 2^scale, W / 2^scale) flow in input-image pixels}; `input_size` (H, W)."""
        a_x, a_y, tau = (t[:, None, None, None] for t in self.translation(code).unbind(dim=1))
        sideways_px = FLOW_SCALE_PX * torch.cat([a_x, a_y], dim=1)
        return {scale: translation_flow_px(rho, sideways_px, tau, input_size)
                for scale, rho in self.inverse_depth(features).items()}


def translation_flow_px(inverse_depth: torch.Tensor, sideways_px: torch.Tensor, forward: torch.Tensor,
                        input_size: tuple[int, int]) -> torch.Tensor:
    """Flow (B, 2, h, w) in input pixels of pixels at `inverse_depth` (B, 1, h, w), on an h x w grid over
    an input of `input_size` (H, W), when the camera moves by `sideways_px` (B, 2, 1, 1) and `forward`
    (B, 1, 1, 1): ``rho * (sideways + forward * p) / (1 - rho * forward)``, p the pixel's offset from the
    input's centre. With rho = 1 / Z (1/m), forward = t_z (m) and sideways = -f * t_xy (px m) this is the
    pinhole camera's exact motion of a still point."""
    h, w = inverse_depth.shape[-2:]
    ys, xs = ((torch.arange(n, device=inverse_depth.device, dtype=inverse_depth.dtype) + 0.5) * (size / n) - size / 2
              for n, size in ((h, input_size[0]), (w, input_size[1])))
    offset_px = torch.stack(torch.broadcast_tensors(xs.view(1, w), ys.view(h, 1)))[None]  # (1, 2, h, w)
    stretch = 1 / (1 - (inverse_depth * forward).clamp(max=RigidFlow.MAX_DEPTH_RATIO))
    return inverse_depth * (sideways_px + forward * offset_px) * stretch


class MotionHead(nn.Module):
    """The motion code alone (B, motion_dim) -> a coarse flow field (B, 2, *MOTION_HEAD_GRID) in input pixels,
    which `GeoPtFlowModel` adds to every scale's flow: the camera's motion, coarsely, while the decoder adds
    what depends on each pixel's depth.

    Why: the decoder sees the target frame only, and pretraining shows it each frame paired with the next
    and with the previous one. Until the code modulates it (its modulation starts at zero), it can only
    guess one flow per image, and it commits to one direction for every pair; pairs moving the other way
    then lie outside the photometric loss's basin and teach it nothing. That is the plateau above the
    zero-flow score (measured: the stuck net's flow opposed the truth, correlation -0.57, and was the same
    for a frame paired with itself). Through the head the motion encoder gets a gradient from the first
    step and the code can set the direction early: on mined video at 10 Hz it did (1.40x -> 0.25x the
    zero-flow score); on world shards at 5 Hz the net still mostly guessed (README, Results)."""

    def __init__(self, motion_dim: int = 128, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(motion_dim, 2 * MOTION_HEAD_GRID[0] * MOTION_HEAD_GRID[1], bias=bias)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.linear(code).view(-1, 2, *MOTION_HEAD_GRID) * FLOW_SCALE_PX


MAX_STRETCH = 0.9
"""Bound on a pixel's stretch a: going forward it moves at most (1 + a) / (1 - a) = 19 times as far as
coming back."""


def stretched_flow_px(odd_flow_px: torch.Tensor, stretch: torch.Tensor) -> torch.Tensor:
    """The flow (B, 2, h, w) of a pair from its odd part `odd_flow_px` (B, 2, h, w), the half-difference of
    the pair's flow and its reverse's, and each pixel's `stretch` a (B, 1, h, w), odd too: O * (1 + a).

    Why: a flow that reverses exactly with the pair's order is right for rotation but not for a camera
    moving forward. There a still point at inverse depth rho moves rho * (s + t p) / (1 - rho t) going
    forward (`translation_flow_px`) and -rho * (s + t p) / (1 + rho t) coming back: further going forward,
    by (1 + a) / (1 - a) with a = rho t. Both are O * (1 + a) and -O * (1 - a), O = rho * (s + t p) /
    (1 - a^2). An antisymmetric net without a stretch learns O for both, short by 1 + a going forward: on
    the 5 Hz proxy its flows were 6.0 px forward and 5.9 px backward against 10.4 and 6.3 true."""
    return odd_flow_px * (1 + stretch)


def check_flow_sources(rigid: bool, flow_decoder: bool) -> None:
    """A net needs a per-pixel flow: the decoder's, or the rigid flow's, or both."""
    if not (flow_decoder or rigid):
        raise ValueError("without the flow decoder only rigid flow can give each pixel its motion: add --rigid-flow")


def check_stretch(stretch: bool, antisymmetric: bool, flow_decoder: bool) -> None:
    """The stretch is the even part of an antisymmetric decoder's flow; without one it has nothing to do."""
    if stretch and not (antisymmetric and flow_decoder):
        raise ValueError("--stretch is the part of the motion that the reversed pair does not undo: it needs "
                         "--antisymmetric and the flow decoder (without them give --no-stretch --extrapolation 0)")


class GeoPtFlowModel(nn.Module):
    """(target, source) frames in 0..1 -> multi-scale flow from target pixels to where they are in source:
    the decoder's flow plus, with `motion_head` (today's default), the motion head's coarse flow, plus,
    with `rigid`, the flow `RigidFlow` derives from an inverse depth and the code's translation. Without
    `flow_decoder` (needs `rigid`) only the head and the rigid flow remain, so every pixel's motion must
    come through its one inverse depth.

    With `antisymmetric` (the default) the decoder runs under the pair's code and under the reversed pair's,
    and the flow is the difference (the head and the rigid translation read the difference of the codes and have
    no bias): whatever the decoder would predict from the target frame alone cancels, and a frame paired
    with itself gets none. With `stretch` (needs `antisymmetric`) the decoder also gives each pixel a
    stretch, antisymmetric the same way, by which the decoder's and the head's flow grows going forward and
    shrinks coming back (`stretched_flow_px`)."""

    def __init__(self, arch: str = "resnet18", motion_dim: int = 128, film_starts_identity: bool = True,
                 coarse_to_fine: bool = False, motion_head: bool = True, antisymmetric: bool = True,
                 rigid: bool = False, flow_decoder: bool = True, stretch: bool = False):
        super().__init__()
        check_flow_sources(rigid, flow_decoder)
        check_stretch(stretch, antisymmetric, flow_decoder)
        self.structure = StructureEncoder(arch)
        self.motion = MotionEncoder(motion_dim)
        self.decoder = (FlowDecoder(self.structure.channels, motion_dim, film_starts_identity, coarse_to_fine,
                                    stretch) if flow_decoder else None)
        self.motion_head = MotionHead(motion_dim, bias=not antisymmetric) if motion_head else None
        self.rigid = RigidFlow(self.structure.channels, motion_dim, bias=not antisymmetric) if rigid else None
        self.antisymmetric = antisymmetric
        self.stretches: dict[int, torch.Tensor] = {}
        """With `stretch`: the last forward pass's stretch at each scale (B, 1, h, w), for the loss, which
        smooths it apart from the flow (`FlowLossConfig.stretch_smoothness`)."""

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> dict[int, torch.Tensor]:
        structure = self.structure(target)
        stretches = {}
        if self.antisymmetric:
            b = target.shape[0]
            codes = self.motion(torch.cat([target, source]), torch.cat([source, target]))
            code = codes[:b] - codes[b:]
            both = self.decoder([torch.cat([f, f]) for f in structure], codes) if self.decoder else {}
            flows = {s: f[:b, :2] - f[b:, :2] for s, f in both.items()}
            stretches = {s: MAX_STRETCH * torch.tanh(f[:b, 2:] - f[b:, 2:])
                         for s, f in both.items() if f.shape[1] > 2}
        else:
            code = self.motion(target, source)
            flows = self.decoder(structure, code) if self.decoder else {}
        coarse = self.motion_head(code) if self.motion_head is not None else None

        def plus_coarse(flow: torch.Tensor) -> torch.Tensor:
            if coarse is None:
                return flow
            return flow + F.interpolate(coarse, size=flow.shape[-2:], mode="bilinear", align_corners=False)

        flows = {scale: stretched_flow_px(plus_coarse(flow), stretches[scale]) if stretches else plus_coarse(flow)
                 for scale, flow in flows.items()}
        self.stretches = stretches
        if self.rigid is not None:  # the head's flow once: with the decoder's (stretched with it), else here
            rigid = self.rigid(structure, code, target.shape[-2:])
            flows = {scale: flows[scale] + flow if scale in flows else plus_coarse(flow)
                     for scale, flow in rigid.items()}
        return flows
