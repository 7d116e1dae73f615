"""DC-AE (f32c32) as a ComfyUI VAE, so the core VAE Decode / Encode, their Tiled versions and VAE Encode (for
Inpainting) work on OpenUni latents.

comfy.sd.VAE has no constructor for an existing module (its __init__ recognises architectures from a state
dict), but its methods only read plain attributes (first_stage_model, patcher, device, vae_dtype,
output_device, latent_channels, downscale/upscale_ratio, process_input/output, memory_used_encode/decode,
working_dtypes, ...). So the base __init__ runs on an EMPTY state dict — it sets every default this ComfyUI
version's methods read, then stops with a "No VAE weights detected" warning, silenced here — and the DC-AE
specifics are set afterwards. `DCAEModule` gives the engine's AutoencoderDC the `encode(pixels in [-1,1])` /
`decode(latents) -> pixels in [-1,1]` contract the base methods call, so VAE.decode/encode keep ComfyUI's
behaviour: load_models_gpu with our memory estimate, batching by free memory, output on the intermediate device.

Tiling: large images and the Tiled nodes (and ComfyUI's out-of-memory fallbacks `decode_tiled_` /
`encode_tiled_`) use the engine's exact tiling (openuni_core.vae_tiling: equal to the untiled result up to
float rounding) instead of ComfyUI's blended tiles, which leave seams with DC-AE's global attention.
"""

from __future__ import annotations

import logging

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd

from . import lowvram
from ...openuni_core.options import SPATIAL_COMPRESSION as PX
from ...openuni_core.vae import TILE_OVERLAP, TILE_SIZE, want_tiling
from ...openuni_core.vae_tiling import decode_tiled, encode_one, encode_tiled

log = logging.getLogger("OpenUni")


class _DropMessage(logging.Filter):
    """Drops one expected log message (by substring) from the root logger's handlers while installed."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record):
        return self.text not in record.getMessage()

    def __enter__(self):
        for h in logging.getLogger().handlers:
            h.addFilter(self)

    def __exit__(self, *exc):
        for h in logging.getLogger().handlers:
            h.removeFilter(self)


def dcae_dtype(device, current: torch.dtype) -> torch.dtype:
    """DC-AE never runs in fp16 (its activations overflow it): bf16 where the device has it, else fp32."""
    if current != torch.float16:
        return current
    return torch.bfloat16 if mm.should_use_bf16(device) else torch.float32


def _tiles(tile_px: int | None, overlap_px: int | None) -> tuple[int, int]:
    """Pixels → (tile, overlap) in latent cells, within what the exact tiling accepts."""
    tile = max(2, int(tile_px or TILE_SIZE) // PX)
    overlap = int(TILE_OVERLAP if overlap_px is None else overlap_px) // PX
    return tile, max(0, min(overlap, tile // 2))


class DCAEModule(torch.nn.Module):
    """first_stage_model for comfy.sd.VAE around diffusers' AutoencoderDC (registered as child `dcae`)."""

    def __init__(self, dcae):
        super().__init__()
        self.dcae = dcae

    def decode(self, z: torch.Tensor, tile_px=None, overlap_px=None, tiled: bool | None = None) -> torch.Tensor:
        """Latents [B,32,h,w] (DC-AE's own) → pixels [B,3,32h,32w] in about [-1,1], on z's device.
        tiled None: tile above the engine's threshold (openuni_core.vae.want_tiling)."""
        tile, overlap = _tiles(tile_px, overlap_px)
        if want_tiling(z.shape[-2] * PX, z.shape[-1] * PX, tiled) and max(z.shape[-2:]) > tile:
            return torch.cat([decode_tiled(self.dcae, one[None], tile, overlap) for one in z])
        return self.dcae.decode(z, return_dict=False)[0]

    def encode(self, x: torch.Tensor, tile_px=None, overlap_px=None, tiled: bool | None = None) -> torch.Tensor:
        """Pixels [B,3,H,W] in [-1,1] → latents [B,32,H/32,W/32] (DC-AE's own)."""
        tile, overlap = _tiles(tile_px, overlap_px)
        if want_tiling(x.shape[-2], x.shape[-1], tiled) and max(x.shape[-2:]) > tile * PX:
            return torch.cat([encode_tiled(self.dcae, one[None], tile, overlap) for one in x])
        return encode_one(self.dcae, x)


class OpenUniVAE(comfy.sd.VAE):
    """comfy.sd.VAE around the engine's AutoencoderDC (shared module, no weight copy), able to load partially."""

    # Activation bytes per image pixel in bf16 (scaled by the dtype's size), measured as peak RSS growth on the
    # CPU with the real dc-ae-f32c32-sana-1.1 architecture (decode 2373/1906 B/px at 512/1024 px, encode
    # 2374/1815); when tiled, the attention stages still see the whole (1/8-size) feature map (~300 B/px) and
    # one tile with its halo is live at a time.
    BYTES_PER_PIXEL = 2000
    TILED_GLOBAL_BYTES_PER_PIXEL = 300
    TILE_HALO_PX = 64

    def __init__(self, dcae, *, device=None, offload_device=None):
        with _DropMessage("No VAE weights detected"):
            super().__init__(sd={})
        self.device = device if device is not None else mm.vae_device()
        self.vae_dtype = dcae_dtype(self.device, dcae.dtype)
        if dcae.dtype != self.vae_dtype:
            log.info("[OpenUni] DC-AE runs in %s (it overflows fp16)", self.vae_dtype)
            dcae.to(self.vae_dtype)
        self.first_stage_model = DCAEModule(dcae).eval()
        self.latent_channels = int(dcae.config.latent_channels)
        self.downscale_ratio = self.upscale_ratio = PX
        self.working_dtypes = [torch.bfloat16, torch.float32]
        self.not_video = True
        self.output_device = mm.intermediate_device()
        self.memory_used_decode = lambda shape, dtype: self._activation_bytes(shape[2] * PX, shape[3] * PX, dtype)
        self.memory_used_encode = lambda shape, dtype: self._activation_bytes(shape[2], shape[3], dtype)
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=self.device,
                                                        offload_device=offload_device or mm.vae_offload_device())
        lowvram.enable_partial_loading(self.patcher)

    def _activation_bytes(self, h: int, w: int, dtype) -> float:
        if want_tiling(h, w, None) and max(h, w) > TILE_SIZE:
            tile = min(h, TILE_SIZE + 2 * self.TILE_HALO_PX) * min(w, TILE_SIZE + 2 * self.TILE_HALO_PX)
            live = self.TILED_GLOBAL_BYTES_PER_PIXEL * h * w + self.BYTES_PER_PIXEL * tile
        else:
            live = self.BYTES_PER_PIXEL * h * w
        return 1.2 * live * mm.dtype_size(dtype) / 2

    # The base class's decode_tiled / encode_tiled (the Tiled nodes) load the model and call these with the
    # node's tile sizes; its out-of-memory fallbacks call them with no sizes. Both get the exact tiling.
    def decode_tiled_(self, samples, tile_x=None, tile_y=None, overlap=None):
        """Latents [B,32,h,w] → pixels [B,3,32h,32w] in 0..1 on the output device; tile sizes in latent cells."""
        tile_px = min(tile_x, tile_y or tile_x) * PX if tile_x else None
        overlap_px = overlap * PX if overlap is not None else None
        out = [self.process_output(self.first_stage_model.decode(one[None].to(self.device, self.vae_dtype), tile_px,
                                                                 overlap_px, tiled=True).float()).to(self.output_device)
               for one in samples]
        return torch.cat(out)

    def encode_tiled_(self, pixel_samples, tile_x=None, tile_y=None, overlap=None):
        """Pixels [B,3,H,W] in 0..1 → latents [B,32,H/32,W/32] on the output device; tile sizes in pixels."""
        tile_px = min(tile_x, tile_y or tile_x) if tile_x else None
        out = [self.first_stage_model.encode(self.process_input(one[None]).to(self.device, self.vae_dtype), tile_px,
                                             overlap, tiled=True).float().to(self.output_device)
               for one in pixel_samples]
        return torch.cat(out)
