"""Image handling shared by editing and captioning: input normalisation and InternVL tiling."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .errors import OpenUniError
from .options import MAX_IMAGE_PIXELS, SPATIAL_COMPRESSION

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_pil(image) -> Image.Image:
    """Accept a PIL image, a path, or a float tensor/array [H,W,C] in 0..1 (C = 1, 3 or 4); return RGB PIL."""
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        try:
            image = Image.open(image)
            check_size(image)  # from the header, before decoding the pixels
            image.load()
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise OpenUniError(f"Cannot read image {image}: {e}. Give a PNG, JPEG, WebP or other image file Pillow "
                               "can open.") from e
    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise OpenUniError("The image is empty (0 pixels).")
        check_size(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # Flatten transparency onto white instead of exposing whatever colour hides under alpha=0.
            rgba = image.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(bg, rgba).convert("RGB")
        return image.convert("RGB")
    t = torch.as_tensor(image).detach()
    if t.ndim == 2:
        t = t[..., None]
    if t.ndim != 3 or t.shape[-1] not in (1, 3, 4) or t.shape[0] < 1 or t.shape[1] < 1:
        raise OpenUniError(f"Expected one image as [height, width, channels] with 1, 3 or 4 channels, got {list(t.shape)}.")
    if t.shape[0] * t.shape[1] > MAX_IMAGE_PIXELS:  # from the shape, before any copy
        raise OpenUniError(f"The image is {t.shape[1]}×{t.shape[0]}; images above {MAX_IMAGE_PIXELS // 1_000_000} MP are "
                           "refused. Downscale it first.")
    t = t.float().cpu()
    if not torch.isfinite(t).all():
        raise OpenUniError("The image contains NaN or infinite values.")
    t = t.clamp(0, 1)
    if t.shape[-1] == 4:
        t = t[..., :3] * t[..., 3:] + (1 - t[..., 3:])
    elif t.shape[-1] == 1:
        t = t.expand(-1, -1, 3)
    return Image.fromarray((t.numpy() * 255.0 + 0.5).astype(np.uint8))


def resize(image: Image.Image, size: tuple[int, int], resample) -> Image.Image:
    """PIL resize in two single-axis passes, width first, then height: what every Pillow before 13 does in one call.
    Pillow 13 runs the height pass first when the height shrinks more than twice as much as the width, which rounds
    differently (up to 17/255 on InternVL tiles), so one call would give different pixels on different Pillows."""
    w, h = size
    if image.width != w:
        image = image.resize((w, image.height), resample)
    if image.height != h:
        image = image.resize((w, h), resample)
    return image


def check_size(image: Image.Image) -> None:
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise OpenUniError(f"The image is {image.width}×{image.height}; images above {MAX_IMAGE_PIXELS // 1_000_000} MP are "
                           "refused. Downscale it first.")


def crop_box_to_multiple(width: int, height: int, multiple: int = SPATIAL_COMPRESSION) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred crop of a width×height image to sides that are multiples of
    `multiple` (DC-AE works on 32×32 blocks; ComfyUI's own VAE Encode crops the same way to multiples of 8).
    Raises OpenUniError when a side is shorter than `multiple`."""
    w, h = width // multiple * multiple, height // multiple * multiple
    if w == 0 or h == 0:
        raise OpenUniError(f"The image is {width}×{height}; DC-AE needs at least {multiple}×{multiple} pixels.")
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def resize_to_cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale (Lanczos) keeping the aspect ratio until the image covers width×height, then centre-crop to exactly
    that: nothing is stretched, and what does not fit the new aspect ratio is cut off evenly on both sides."""
    scale = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    left, top = (w - width) // 2, (h - height) // 2
    return image.resize((w, h), Image.LANCZOS).crop((left, top, left + width, top + height))


def normalize(image: Image.Image) -> torch.Tensor:
    """RGB PIL → [3,H,W] float normalised with ImageNet mean/std (InternViT's input)."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def closest_tile_grid(width: int, height: int, max_tiles: int, tile: int = 448, min_tiles: int = 1) -> tuple[int, int]:
    """InternVL's choice of (columns, rows): the grid whose aspect is nearest the image's; on a tie, the
    larger grid if the image has enough pixels to fill it."""
    aspect = width / height
    grids = sorted({(i, j) for n in range(min_tiles, max_tiles + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                    if min_tiles <= i * j <= max_tiles}, key=lambda g: (g[0] * g[1], g))
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


def _with_thumbnail(grid_tiles: int, use_thumbnail: bool) -> bool:
    return use_thumbnail and grid_tiles > 1


def tile_count(width: int, height: int, max_tiles: int, use_thumbnail: bool = True) -> int:
    """How many 448×448 views `tile_image` makes of an image this size (known before any pixel work)."""
    cols, rows = closest_tile_grid(width, height, max_tiles)
    return cols * rows + _with_thumbnail(cols * rows, use_thumbnail)


def tile_image(image: Image.Image, max_tiles: int, use_thumbnail: bool = True, tile: int = 448) -> list[Image.Image]:
    """InternVL "dynamic preprocess": resize to a grid of tile×tile crops (+ a thumbnail when >1 tile)."""
    cols, rows = closest_tile_grid(image.width, image.height, max_tiles, tile)
    resized = resize(image, (cols * tile, rows * tile), Image.BICUBIC)
    tiles = [resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows) for c in range(cols)]
    if _with_thumbnail(len(tiles), use_thumbnail):
        tiles.append(resize(image, (tile, tile), Image.BICUBIC))
    return tiles


def caption_pixel_values(image: Image.Image, max_tiles: int, use_thumbnail: bool = True) -> torch.Tensor:
    tiles = tile_image(image, max_tiles, use_thumbnail)
    return torch.stack([normalize(resize(t, (448, 448), Image.BICUBIC) if t.size != (448, 448) else t) for t in tiles])


def edit_pixel_values(image: Image.Image) -> torch.Tensor:
    """The editing path feeds one 448×448 view, resized bilinearly (width and height kept in order)."""
    return normalize(resize(image, (448, 448), Image.BILINEAR))[None]


def images_to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """Same-size RGB images → [B,3,H,W] in −1..1 (DC-AE's input range)."""
    arr = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) * 2.0 - 1.0
