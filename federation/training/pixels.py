"""Stored pixels to model input: modality units, window, photometric convention, size.

The node stores what the scanner wrote (16-bit CT, MR, 8-bit PNG ...). A model wants
one float image of the run's size with values in [-1, 1]. The steps, in order, all
in float32 so nothing is quantised to 8 bits on the way:

1. one frame: a multi-frame instance gives its middle frame (one record per
   instance, as the DP accountant counts records; a volume's central slice is
   the most representative single one);
2. modality units: value × RescaleSlope + RescaleIntercept (Hounsfield units for CT);
3. window [lo, hi] → [0, 1], values outside set to the window's ends: the window the
   file gives (first one, DICOM PS3.3 C.11.2.1.2 linear formula); otherwise for CT a
   fixed HU window, lung (C −600, W 1500) when the body site is the chest, soft tissue
   (C 40, W 400) elsewhere, so that every hospital's CT means the same tissue at the
   same value; otherwise the full range for 8-bit data (already display-ready) and
   the image's own 0.5th–99.5th percentiles for anything deeper (MR, NM, 16-bit PNG:
   their units are arbitrary per scanner);
4. MONOCHROME1 (higher value = darker) inverted to the MONOCHROME2 convention;
5. letterboxed to a square (black bars, so anatomy keeps its aspect ratio) and
   resampled to size × size with antialiased bilinear interpolation;
6. [0, 1] → [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The model input side when a caller gives none (RunParams' and ModelSpec's default).
DEFAULT_IMAGE_SIZE = 28
#: (centre, width) in Hounsfield units.
CT_LUNG_WINDOW = (-600.0, 1500.0)
CT_SOFT_TISSUE_WINDOW = (40.0, 400.0)
LUNG_SITES = frozenset({"CHEST", "LUNG", "THORAX"})
PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class PixelMeta:
    """What the store knows about how to read one image's values (NULL → None)."""

    modality: str | None = None
    body_site: str | None = None
    photometric: str | None = None
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    window_center: float | None = None
    window_width: float | None = None

    @property
    def is_plain(self) -> bool:
        """True when the stored values need no interpretation (PNG, MedMNIST rows)."""
        return all(v is None for v in (self.photometric, self.rescale_slope,
                                       self.rescale_intercept, self.window_center,
                                       self.window_width))


def middle_frame(arr: np.ndarray, frames: int) -> np.ndarray:
    """The central frame of a ([frames,] H, W[, C]) array, as H × W × C (a leading axis
    of one frame is dropped too)."""
    a = arr[frames // 2] if frames > 1 or arr.ndim == 4 else arr
    return a[..., None] if a.ndim == 2 else a


def modality_values(image: np.ndarray, meta: PixelMeta) -> np.ndarray:
    """Stored values in modality units (float32): slope and intercept applied."""
    out = image.astype(np.float32)
    slope = 1.0 if meta.rescale_slope is None else meta.rescale_slope
    intercept = 0.0 if meta.rescale_intercept is None else meta.rescale_intercept
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def window_bounds(values: np.ndarray, meta: PixelMeta, stored_dtype: np.dtype
                  ) -> tuple[float, float]:
    """[lo, hi] of modality-unit values that map to [0, 1] (see the module docstring)."""
    centre_width = None
    if meta.window_center is not None and meta.window_width is not None \
            and meta.window_width >= 1:
        centre_width = (meta.window_center, meta.window_width)
    elif (meta.modality or "").upper() == "CT":
        centre_width = (CT_LUNG_WINDOW if (meta.body_site or "").upper() in LUNG_SITES
                        else CT_SOFT_TISSUE_WINDOW)
    if centre_width is not None:
        c, w = centre_width
        return c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    if stored_dtype.kind in "ui" and stored_dtype.itemsize == 1 and meta.rescale_slope in (
            None, 1.0) and meta.rescale_intercept in (None, 0.0):
        info = np.iinfo(stored_dtype)
        return float(info.min), float(info.max)
    lo, hi = np.percentile(values, PERCENTILES)
    return float(lo), float(hi)


def to_unit(image: np.ndarray, meta: PixelMeta) -> np.ndarray:
    """H × W × C stored values → float32 in [0, 1], MONOCHROME2 convention."""
    values = modality_values(image, meta)
    lo, hi = window_bounds(values, meta, image.dtype)
    span = hi - lo if hi > lo else 1.0
    unit = np.clip((values - np.float32(lo)) / np.float32(span), 0.0, 1.0, dtype=np.float32)
    if (meta.photometric or "").upper() == "MONOCHROME1":
        unit = 1.0 - unit
    return unit


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """H × W × C float32 → size × size × C: letterboxed, antialiased bilinear resample."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    side = max(h, w)
    if h != w:
        padded = np.zeros((side, side, image.shape[2]), np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        padded[top:top + h, left:left + w] = image
        image = padded
    if side == size:
        return np.ascontiguousarray(image, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                        antialias=True)
    return out[0].permute(1, 2, 0).numpy()


def prepare_image(arr: np.ndarray, meta: PixelMeta, *, frames: int = 1,
                  size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """One stored image ([frames,] H, W[, C]) → float32 size × size × C in [-1, 1]."""
    unit = to_unit(middle_frame(arr, frames), meta)
    out = resize_square(unit, size)
    return np.clip(out, 0.0, 1.0) * np.float32(2.0) - np.float32(1.0)
