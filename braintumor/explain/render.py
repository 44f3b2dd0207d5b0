"""Pictures of heatmaps: colours, overlays and the input | heatmap | overlay panel."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image

from .. import plots
from ..data import PixelBox, unframe
from .gradcam import resize_map


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 from (h, w), (h, w, 1), (h, w, 3) or (h, w, 4) 0-255 pixels."""
    image = np.clip(np.rint(np.asarray(image, dtype=np.float32)), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image[..., :3]


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 'jet' colours of a [0, 1] heatmap (blue: nothing, red: most)."""
    return (colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The coloured heatmap blended over the image: (h, w, 3) uint8 RGB at the image's size."""
    rgb = as_rgb(image)
    heat = resize_map(np.asarray(heatmap, dtype=np.float32), *rgb.shape[:2])
    blend = (1 - alpha) * rgb.astype(np.float32) + alpha * colorize(heat).astype(np.float32)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def panel_png(image: np.ndarray, heatmap: np.ndarray, title: str) -> bytes:
    """PNG bytes of the input, the heatmap and the overlay side by side under ``title``."""
    rgb = as_rgb(image)
    heat = resize_map(np.asarray(heatmap, dtype=np.float32), *rgb.shape[:2])
    return plots.figure_png(plots.cam_panel_figure(rgb, heat, overlay(rgb, heat), title))


def native_view(img: Image.Image, box: PixelBox, heatmap: np.ndarray,
                max_side: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(the decoded image as RGB, its heatmap) at the image's own resolution, capped at ``max_side`` pixels on
    the longer side: the scan as it came with the model's map (made on the framed, resized input) on top."""
    scale = min(1.0, max_side / max(img.size))
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    shown = img.convert("RGB").resize((w, h), Image.BILINEAR) if scale < 1 else img.convert("RGB")
    box = tuple(int(round(v * scale)) for v in box)
    return np.asarray(shown), unframe(heatmap, box, w, h)


def draw_region(rgb: np.ndarray, mask: np.ndarray, colour=(0, 255, 0)) -> np.ndarray:
    """The outline of an annotated region (same (h, w) as ``rgb``) drawn over a copy of the image."""
    inside = np.asarray(mask, bool)
    edge = inside & ~(np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1))
    thick = edge | np.roll(edge, 1, 0) | np.roll(edge, 1, 1)
    out = np.array(rgb, copy=True)
    out[thick] = colour
    return out
