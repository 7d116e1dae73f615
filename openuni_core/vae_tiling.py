"""Exact tiled DC-AE decode/encode, and a blended-tile fallback for DC-AE structures the exact split does not know.

Used by vae.py for large images; see its docstring for when tiling happens.
"""

from __future__ import annotations

import math

import torch

from .options import SPATIAL_COMPRESSION as PX  # pixels per latent cell along a side (DC-AE f32)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` covering `size`, evenly spread, neighbours sharing at least `overlap`."""
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap) / max(1, tile - overlap))
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def _ramp(length: int, start: int, total: int, fade: int, device) -> torch.Tensor:
    """1-D blend weights of one tile: 1 inside, linear to ~0 over `fade` at edges that have a neighbour."""
    w = torch.ones(length, device=device, dtype=torch.float32)
    fade = min(fade, length // 2)
    if fade > 0:
        up = (torch.arange(fade, device=device, dtype=torch.float32) + 0.5) / fade
        if start > 0:
            w[:fade] = up
        if start + length < total:
            w[length - fade:] = torch.minimum(w[length - fade:], up.flip(0))
    return w


def decode_tiled(vae, z: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """z [1,32,h,w] (DC-AE latents, unscaled) → [1,3,32h,32w], tile by tile."""
    exact = _decode_split(vae, z, tile * PX)
    return exact if exact is not None else _decode_blended(vae, z, tile, overlap)


def encode_tiled(vae, pixels: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """pixels [1,3,H,W] → latents [1,32,H/32,W/32], tile by tile."""
    exact = _encode_split(vae, pixels, tile * PX)
    return exact if exact is not None else _encode_blended(vae, pixels, tile, overlap)


def encode_one(vae, pixels: torch.Tensor) -> torch.Tensor:
    enc = vae.encode(pixels, return_dict=False)[0]
    return enc.latent if hasattr(enc, "latent") else enc


# ----- exact tiling: split DC-AE where its global attention ends ---------------------------------------------
# Only DC-AE's EfficientViT stages (at 1/32..1/8 of the image) see the whole image; its high-resolution
# stages — where nearly all the memory goes — are convolutions, per-pixel norms and up/down-sampling.
# So the decoder runs its attention stages on the whole (small) feature map, then the convolutional
# tail tile by tile, each tile extended by a halo of its receptive field and cropped back: every output
# pixel sees exactly the inputs it sees untiled, and the result equals the untiled decode up to float
# rounding. The encoder is the mirror image (tiled convolutional head, whole-map attention tail).
# If the model's structure is not the one we know, we fall back to the blended tiles below.

def _is_global(module: torch.nn.Module) -> bool:
    return any(type(m).__name__ in ("EfficientViTBlock", "SanaMultiscaleLinearAttention") or "Attention" in type(m).__name__
               for m in module.modules())


def _conv_radius(conv) -> int | None:
    if not isinstance(conv, torch.nn.Conv2d) or conv.kernel_size[0] != conv.kernel_size[1] or conv.dilation != (1, 1):
        return None
    return conv.kernel_size[0] // 2


_POINTWISE = ("RMSNorm", "RMSNorm2d", "BatchNorm2d", "LayerNorm", "Identity", "ReLU", "SiLU", "GELU", "ReLU6",
              "Sigmoid", "Tanh", "Hardswish")


def _walk(modules, *, up: bool) -> tuple[float, int] | None:
    """Receptive radius of a chain of DC-AE local modules, in units of the chain's input, and its scale.

    up=True: each upsampling doubles the positions per input unit (decoder tail);
    up=False: each downsampling doubles the input units per position (encoder head).
    Returns None if a module is not one we know to be local.
    """
    radius, scale = 0.0, 1

    def add(r):
        nonlocal radius
        radius += r / scale if up else r * scale

    for m in modules:
        name = type(m).__name__
        if isinstance(m, torch.nn.Sequential):
            inner = _walk(list(m), up=up)
            if inner is None:
                return None
            radius += inner[0] / scale if up else inner[0] * scale
            scale *= inner[1]
        elif isinstance(m, torch.nn.Conv2d):
            r = _conv_radius(m)
            if r is None or m.stride != (1, 1):
                return None
            add(r)
        elif name == "ResBlock":
            rs = [_conv_radius(m.conv1), _conv_radius(m.conv2)]
            if None in rs:
                return None
            add(sum(rs))
        elif name == "DCUpBlock2d" and up:
            r = _conv_radius(m.conv)
            if r is None or m.factor != 2:
                return None
            if m.interpolate:
                scale *= 2
                add(r)
            else:
                add(r)
                scale *= 2
        elif name == "DCDownBlock2d" and not up:
            r = _conv_radius(m.conv)
            if r is None or m.factor != 2:
                return None
            add(r)
            scale *= 2
        elif name in _POINTWISE:
            continue
        else:
            return None
    return radius, scale


def _by_tiles(x: torch.Tensor, fn, *, core: int, halo: int, up: int = 1, down: int = 1) -> torch.Tensor:
    """fn(x) computed tile by tile: each `core`-sized tile of x is extended by `halo` cells on every side
    (at least fn's receptive field), run through fn, and its centre cropped into place. fn scales space by
    up/down (core and halo are multiples of `down`), so every output cell sees exactly the inputs it sees
    untiled and the result equals fn(x)."""
    H, W = x.shape[-2:]

    def r(v: int) -> int:
        return v * up // down

    out = None
    for y0 in range(0, H, core):
        for x0 in range(0, W, core):
            ys, xs = max(0, y0 - halo), max(0, x0 - halo)
            t = fn(x[..., ys:min(H, y0 + core + halo), xs:min(W, x0 + core + halo)])
            if out is None:
                out = t.new_empty((*t.shape[:2], r(H), r(W)))
            ch, cw = r(min(core, H - y0)), r(min(core, W - x0))
            oy, ox = r(y0 - ys), r(x0 - xs)
            out[..., r(y0):r(y0) + ch, r(x0):r(x0) + cw] = t[..., oy:oy + ch, ox:ox + cw]
    return out


def _decode_split(vae, z: torch.Tensor, tile_px: int) -> torch.Tensor | None:
    dec = getattr(vae, "decoder", None)
    try:
        order = list(reversed(dec.up_blocks))
        finish = [dec.norm_out, dec.conv_act, dec.conv_out]
        in_shortcut = bool(dec.in_shortcut)
    except AttributeError:
        return None
    split = max((i + 1 for i, b in enumerate(order) if _is_global(b)), default=0)
    tail = order[split:]
    walked = _walk(tail + [dec.conv_out], up=True)
    if walked is None or not all(type(m).__name__ in _POINTWISE for m in finish[:2]):
        return None
    radius, _ = walked

    h = dec.conv_in(z)
    if in_shortcut:
        h = h + z.repeat_interleave(dec.in_shortcut_repeats, dim=1)
    for block in order[:split]:
        h = block(h)
    scale = z.shape[-1] * PX // h.shape[-1]

    def finish_tile(t: torch.Tensor) -> torch.Tensor:
        for block in tail:
            t = block(t)
        t = dec.norm_out(t.movedim(1, -1)).movedim(-1, 1)
        return dec.conv_out(dec.conv_act(t))

    return _by_tiles(h, finish_tile, core=max(1, tile_px // scale), halo=math.ceil(radius) + 1, up=scale)


def _encode_split(vae, pixels: torch.Tensor, tile_px: int) -> torch.Tensor | None:
    enc = getattr(vae, "encoder", None)
    try:
        order = [enc.conv_in, *enc.down_blocks]
        out_shortcut = bool(enc.out_shortcut)
        conv_out = enc.conv_out
    except AttributeError:
        return None
    split = next((i for i, b in enumerate(order) if _is_global(b)), len(order))
    head = order[:split]
    walked = _walk(head, up=False)
    if walked is None or not head:
        return None
    radius, down = walked
    H, W = pixels.shape[-2:]
    if H % down or W % down:
        return None

    def head_tile(t: torch.Tensor) -> torch.Tensor:
        for block in head:
            t = block(t)
        return t

    h = _by_tiles(pixels, head_tile, core=max(down, tile_px // down * down),
                  halo=math.ceil((radius + 1) / down) * down, down=down)
    for block in order[split:]:
        h = block(h)
    if out_shortcut:
        return conv_out(h) + h.unflatten(1, (-1, enc.out_shortcut_average_group_size)).mean(dim=2)
    return conv_out(h)


# ----- fallback: overlapping tiles, blended -----------------------------------------------------------------
def _decode_blended(vae, z: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    h, w = z.shape[-2:]
    blend = _Blend(PX, overlap * PX, (h * PX, w * PX), z.device)
    for y0 in tile_starts(h, tile, overlap):
        for x0 in tile_starts(w, tile, overlap):
            blend.add(vae.decode(z[..., y0:y0 + tile, x0:x0 + tile], return_dict=False)[0], y0, x0)
    return blend.result()


def _encode_blended(vae, pixels: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    h, w = pixels.shape[-2] // PX, pixels.shape[-1] // PX
    blend = _Blend(1, overlap, (h, w), pixels.device)
    for y0 in tile_starts(h, tile, overlap):
        for x0 in tile_starts(w, tile, overlap):
            part = pixels[..., y0 * PX:(y0 + tile) * PX, x0 * PX:(x0 + tile) * PX]
            blend.add(encode_one(vae, part), y0, x0)
    return blend.result()


class _Blend:
    """Weighted sum of tiles placed at (y0*scale, x0*scale), normalised by the summed weights."""

    def __init__(self, scale: int, fade: int, size: tuple[int, int], device):
        self.scale, self.fade, self.size, self.device = scale, fade, size, device
        self.acc = None
        self.norm = torch.zeros((1, 1, *size), device=device, dtype=torch.float32)

    def add(self, t: torch.Tensor, y0: int, x0: int) -> None:
        th, tw = t.shape[-2:]
        y, x = y0 * self.scale, x0 * self.scale
        weight = (_ramp(th, y, self.size[0], self.fade, self.device)[:, None]
                  * _ramp(tw, x, self.size[1], self.fade, self.device)[None, :])
        if self.acc is None:
            self.acc = torch.zeros((1, t.shape[1], *self.size), device=self.device, dtype=torch.float32)
        self.acc[..., y:y + th, x:x + tw] += t.float() * weight
        self.norm[..., y:y + th, x:x + tw] += weight

    def result(self) -> torch.Tensor:
        return self.acc / self.norm
