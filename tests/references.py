"""Independent references the tests compare the engine with: written from diffusers' and transformers' own
classes and from published facts, never from the engine's helpers."""

from __future__ import annotations

import torch


def reference_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """diffusers' untiled AutoencoderDC decode of DC-AE's own latents, mapped to ComfyUI's IMAGE: [B,H,W,3] in 0..1."""
    with torch.no_grad():
        x = vae.decode(latents).sample
    return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)


def reference_encode(vae, images: torch.Tensor) -> torch.Tensor:
    """diffusers' untiled AutoencoderDC encode of a 0..1 IMAGE [B,H,W,3]: DC-AE's own (unscaled) `.latent`."""
    with torch.no_grad():
        return vae.encode(images.permute(0, 3, 1, 2) * 2 - 1).latent


# ----- the published input limits (README "Reliability and security"; the nodes' widgets) ---------------------
# Written out here so property-based tests can say which inputs must be ACCEPTED, not only which are refused.

def valid_side(v) -> bool:
    """Image sides: multiples of 32 from 32 to 4096."""
    return isinstance(v, int) and not isinstance(v, bool) and 32 <= v <= 4096 and v % 32 == 0


def valid_sampling(*, steps, cfg, sampler, width=None, height=None, batch=None, denoise=None) -> bool:
    """Sampler settings: steps 1–1000, cfg 0–100 (not NaN), sampler dpmpp or euler; when given, sides as above,
    batch 1–64, and an image-to-image denoise above 0, at most 1, leaving at least one of the steps to run
    (diffusers' img2img runs int(steps·denoise) steps)."""
    ok = isinstance(steps, int) and 1 <= steps <= 1000 and cfg == cfg and 0 <= cfg <= 100 and sampler in ("dpmpp", "euler")
    if width is not None or height is not None:
        ok = ok and valid_side(width) and valid_side(height)
    if batch is not None:
        ok = ok and 1 <= batch <= 64
    if denoise is not None:
        ok = ok and denoise == denoise and 0 < denoise <= 1 and int(steps * denoise) >= 1
    return ok


def valid_caption(*, max_tiles, max_new_tokens, temperature) -> bool:
    """Caption settings: max_tiles 1–40, max_new_tokens 1–8192, temperature 0–5 (not NaN)."""
    return 1 <= max_tiles <= 40 and 1 <= max_new_tokens <= 8192 and temperature == temperature and 0 <= temperature <= 5


def may_hold_control_token(text: str) -> bool:
    """Text that may spell one of the model's chat-format tokens (`<|im_end|>`, `<img>`, …), which are refused."""
    start = text.find("<")
    return start >= 0 and ">" in text[start:]
