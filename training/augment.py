"""Colour jitter shared by both pipelines, Monodepth2's: brightness, contrast and saturation times
1 +- `strength`, hue +- `strength` / 2 (of a full turn, torchvision's unit), applied in a random order.

One draw serves every frame of a sample, so the frames stay photometrically consistent with each other
and the photometric losses still compare like with like.
"""
import random
from dataclasses import dataclass

import torch
import torchvision.transforms.functional as TF

STRENGTH = 0.2
"""Monodepth2's 0.2: factors in 0.8..1.2, hue in -0.1..0.1."""
_OPERATIONS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


@dataclass(frozen=True)
class ColourJitter:
    order: tuple[int, ...]
    """Indices into brightness, contrast, saturation, hue: the order they are applied in."""
    brightness: float
    contrast: float
    saturation: float
    hue: float

    @classmethod
    def draw(cls, rng: random.Random, strength: float = STRENGTH) -> "ColourJitter":
        """A random jitter; `rng` is a `random.Random` (or the `random` module, seeded per loader worker)."""
        order = list(range(4))
        rng.shuffle(order)
        factors = [rng.uniform(1 - strength, 1 + strength) for _ in range(3)]
        return cls(tuple(order), *factors, rng.uniform(-strength / 2, strength / 2))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) float image in 0..1 -> the jittered image, still in 0..1."""
        factors = (self.brightness, self.contrast, self.saturation, self.hue)
        for index in self.order:
            image = _OPERATIONS[index](image, factors[index])
        return image
