"""Export the pretrained structure encoder for others to use.

- ``torchvision``: a state dict that loads into a stock ``torchvision.models.resnet18()`` / ``resnet50()``
  (``strict=False`` reports only the classifier ``fc`` as missing, which pretraining never had);
- ``monodepth2``: Monodepth2's ``encoder.pth`` layout (``encoder.``-prefixed ResNet weights plus the
  training ``height``, ``width`` and ``use_stereo`` entries its loaders read).
"""
from pathlib import Path

import torch

from formats.files import atomic_path
from training.checkpoints import load_checkpoint

FORMATS = ("torchvision", "monodepth2")


def encoder_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """torchvision-named ResNet weights of the structure encoder in a pretraining checkpoint."""
    prefix = "structure.resnet."
    weights = {k[len(prefix):]: v for k, v in checkpoint["model"].items() if k.startswith(prefix)}
    if not weights:
        raise ValueError("the checkpoint holds no structure encoder (is it a `geopt-train pretrain` checkpoint?)")
    return weights


def export_backbone(checkpoint_path: Path, out_path: Path, fmt: str = "torchvision") -> dict:
    """Write the encoder of `checkpoint_path` to `out_path` in `fmt`; returns a short description."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    checkpoint = load_checkpoint(checkpoint_path)
    weights = encoder_state_dict(checkpoint)
    if fmt == "monodepth2":
        state = {f"encoder.{k}": v for k, v in weights.items()}
        state.update(height=checkpoint["height_px"], width=checkpoint["width_px"], use_stereo=False)
    else:
        state = weights
    with atomic_path(Path(out_path)) as tmp:
        torch.save(state, tmp)
    return {"arch": checkpoint["arch"], "step": checkpoint["step"], "tensors": len(weights), "format": fmt}
