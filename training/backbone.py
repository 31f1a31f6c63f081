"""The backbone: the structure encoder that pretraining trains and the depth transfer starts from.

A stock torchvision ResNet without its head, keeping torchvision's parameter names, so its weights load
into `torchvision.models.resnet18/50` and back (`load_resnet_weights`). Both decoders (flow and
disparity) are U-Nets over its features built from `ConvBlock`s, predicting at `SCALES`.
"""
import torch
import torchvision
from torch import nn

IMAGE_MEAN, IMAGE_STD = 0.45, 0.225
"""Monodepth2's input normalisation, kept so transferred encoders see the inputs they learned on."""
SCALES = (0, 1, 2, 3)
"""Both decoders predict at 1/2^s of the input size for each s."""
ARCHITECTURES = {"resnet18": torchvision.models.resnet18, "resnet50": torchvision.models.resnet50}


class StructureEncoder(nn.Module):
    """A torchvision ResNet without its head. `forward` -> 5 feature maps at 1/2, 1/4, 1/8, 1/16, 1/32.

    The wrapped ResNet keeps torchvision's parameter names, so its state dict loads into a stock
    `torchvision.models.resnet18/50` (the unused `fc` aside).
    """

    def __init__(self, arch: str = "resnet18"):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
        self.resnet = ARCHITECTURES[arch](weights=None)
        del self.resnet.fc
        expansion = 4 if arch == "resnet50" else 1
        self.channels = [64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """`image` (B, 3, H, W) in 0..1; with H and W multiples of 32 the maps are exactly 1/2^s of them,
        otherwise the strides round their sizes up."""
        r = self.resnet
        x = r.relu(r.bn1(r.conv1((image - IMAGE_MEAN) / IMAGE_STD)))
        features = [x]
        x = r.layer1(r.maxpool(x))
        features.append(x)
        for layer in (r.layer2, r.layer3, r.layer4):
            x = layer(x)
            features.append(x)
        return features


class ConvBlock(nn.Sequential):
    """3x3 convolution with reflection padding and ELU, the unit of both decoders (Monodepth2's)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3), nn.ELU(inplace=True))


def load_resnet_weights(encoder: StructureEncoder, weights: dict[str, torch.Tensor]) -> None:
    """Load torchvision-named ResNet weights into `encoder`, strictly except for the classifier `fc`.

    When the encoder's first convolution takes k x 3 channels (k stacked frames) and the weights have 3,
    the 3-channel kernel is repeated k times and divided by k, so stacked identical frames give the
    response one frame gave (Monodepth2's multi-image encoder).
    """
    weights = {k: v for k, v in weights.items() if not k.startswith("fc.")}
    conv1 = weights.get("conv1.weight")
    wanted = encoder.resnet.conv1.weight.shape[1]
    if conv1 is not None and conv1.shape[1] != wanted:
        if wanted % conv1.shape[1]:
            raise ValueError(f"cannot fit conv1 weights with {conv1.shape[1]} input channels to {wanted}")
        copies = wanted // conv1.shape[1]
        weights["conv1.weight"] = torch.cat([conv1] * copies, dim=1) / copies
    encoder.resnet.load_state_dict(weights, strict=True)
