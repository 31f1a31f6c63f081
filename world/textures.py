"""Procedural surface detail: a tileable noise texture with mipmaps, and anti-aliased patterns.

Every colour in the world is a function of a point's position on its surface, never of the camera, so
the same point looks the same in every frame (photometric consistency, which the losses rely on). Far
surfaces sample a blurrier mip level, chosen from the pixel footprint, so textures do not
shimmer from frame to frame.
"""
import numpy as np

TILE_TEXELS = 256
"""Side of the finest level; the sampler relies on it being 2^8."""
MIP_LEVELS = 9
"""Level l is (256 >> l) texels square: the tile low-passed and subsampled by 2^l."""


def _make_mipmaps(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tileable 1/f noise, zero mean and unit variance at level 0, as one flat float32 array of all
    levels, and the (L,) start of each level in it.

    Real mipmaps rather than blurred copies at full size: neighbouring pixels then read neighbouring
    texels at every level, which keeps the sampler in cache.
    """
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((TILE_TEXELS, TILE_TEXELS))
    freq = np.fft.fftfreq(TILE_TEXELS)
    f2 = freq[:, None] ** 2 + freq[None, :] ** 2
    spectrum = np.fft.fft2(white) / np.maximum(f2, 1.0 / TILE_TEXELS**2) ** 0.45
    base = np.real(np.fft.ifft2(spectrum))
    spectrum = np.fft.fft2((base - base.mean()) / base.std())
    levels = []
    for level in range(MIP_LEVELS):
        sigma = 0.0 if level == 0 else 0.5 * 2.0**level
        blurred = np.real(np.fft.ifft2(spectrum * np.exp(-2 * np.pi**2 * sigma**2 * f2)))
        levels.append(blurred[:: 2**level, :: 2**level].astype(np.float32).reshape(-1))
    starts = np.cumsum([0] + [len(x) for x in levels[:-1]]).astype(np.int32)
    return np.concatenate(levels), starts


_MIPMAPS, _LEVEL_START = _make_mipmaps(seed=20240601)
_LEVEL_SCALE = (2.0 ** -np.arange(MIP_LEVELS)).astype(np.float32)
_WRAP_TEXELS = np.float32(65536.0)
"""Added before truncating to integers: a multiple of every level's size, making coordinates positive."""


def _wrapped_float32(texels: np.ndarray) -> np.ndarray:
    """Coordinates as non-negative float32; float64 world coordinates are first reduced modulo the tile
    so that float32 keeps sub-texel precision far from the origin."""
    texels = np.asarray(texels)
    if texels.dtype == np.float64:
        texels = np.mod(texels, TILE_TEXELS)
    return texels.astype(np.float32) + _WRAP_TEXELS


def noise(u_texels: np.ndarray, v_texels: np.ndarray, footprint_texels: np.ndarray) -> np.ndarray:
    """Bilinear sample of the noise tile (wrapping) at the mip level that matches the footprint.

    Values have mean 0 and standard deviation about 1 where the footprint is below a texel, falling
    toward 0 as surfaces get far away (their detail blurs out as it would in a real lens).
    """
    level = np.log2(np.maximum(footprint_texels, 1.0, dtype=np.float32)) + np.float32(0.5)
    level = np.minimum(level, MIP_LEVELS - 1).astype(np.int32)
    scale = _LEVEL_SCALE.take(level)
    u = _wrapped_float32(u_texels) * scale
    v = _wrapped_float32(v_texels) * scale
    floor_u, floor_v = np.floor(u), np.floor(v)
    fu, fv = u - floor_u, v - floor_v
    iu, iv = floor_u.astype(np.int32), floor_v.astype(np.int32)
    shift = 8 - level
    mask = (1 << shift) - 1
    start = _LEVEL_START.take(level)
    col0, col1 = iu & mask, (iu + 1) & mask
    row0 = start + ((iv & mask) << shift)
    row1 = start + (((iv + 1) & mask) << shift)
    top = _MIPMAPS.take(row0 + col0)
    top += (_MIPMAPS.take(row0 + col1) - top) * fu
    bottom = _MIPMAPS.take(row1 + col0)
    bottom += (_MIPMAPS.take(row1 + col1) - bottom) * fu
    return top + (bottom - top) * fv


def surface_noise(u_m: np.ndarray, v_m: np.ndarray, texel_m: float, footprint_m: np.ndarray,
                  offset: np.ndarray | float = 0.0) -> np.ndarray:
    """`noise` addressed in metres on a surface; `offset` (texels) decorrelates objects sharing the tile."""
    scale = 1.0 / texel_m
    return noise(u_m * scale + offset, v_m * scale + 1.7 * offset, footprint_m * scale)


def stripe_coverage(distance_m: np.ndarray, half_width_m: float, footprint_m: np.ndarray) -> np.ndarray:
    """Fraction of a pixel covered by a stripe, given the pixel's distance from the stripe's axis.

    A box filter of the pixel footprint: 1 well inside, 0 well outside, and for stripes thinner than a
    pixel their area fraction, so thin lines fade with distance instead of flickering.
    """
    fp = np.maximum(footprint_m, 1e-6)
    inside = np.clip((half_width_m - np.abs(distance_m)) / fp + 0.5, 0.0, 1.0)
    return np.minimum(inside, 2 * half_width_m / fp)


def distance_to_grid(coord_m: np.ndarray, period_m: float, phase_m: float | np.ndarray = 0.0) -> np.ndarray:
    """Distance from `coord_m` to the nearest line of a grid with lines every `period_m` metres."""
    x = (coord_m - phase_m) / period_m
    return np.abs(x - np.round(x)) * period_m


def periodic_interval_coverage(coord_m: np.ndarray, period_m: float, start_m: float, length_m: float,
                               footprint_m: np.ndarray) -> np.ndarray:
    """Coverage of intervals [start, start + length) repeating every `period_m` (dashes, window columns)."""
    centre = start_m + 0.5 * length_m
    return stripe_coverage(distance_to_grid(coord_m, period_m, centre), 0.5 * length_m, footprint_m)
