"""Inpainting for the sampling loop: a noise mask says where the image may change (1) and where the input
latent is kept (0), with ComfyUI's LATENT `noise_mask` semantics.

The loop follows diffusers' inpainting pipelines (e.g. StableDiffusionInpaintPipeline's `prepare_latents` /
denoising loop): after every scheduler step the latents outside the mask are replaced by the input latents
noised to the step's new sigma with the run's own noise, and after the last step by the input latents
themselves, so the result equals the input outside the mask exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import OpenUniError


def check_mask(mask: torch.Tensor, *, batch: int) -> None:
    """Raise OpenUniError unless `mask` is a finite [h,w], [B,h,w] or [B,1,h,w] tensor with B 1 or `batch`."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4) or (mask.ndim == 4 and mask.shape[1] != 1) \
            or mask.numel() == 0:
        raise OpenUniError(f"The latent's noise_mask has shape "
                           f"{list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}; it must "
                           "be a mask [height, width] or [batch, height, width] (e.g. from Set Latent Noise Mask).")
    masks = 1 if mask.ndim == 2 else mask.shape[0]
    if masks not in (1, batch):
        raise OpenUniError(f"The latent's noise_mask holds {masks} masks for {batch} images; give one mask, or one "
                           "per image.")
    if not torch.isfinite(mask).all():
        raise OpenUniError("The latent's noise_mask contains NaN or infinite values.")


def latent_mask(mask: torch.Tensor, size: tuple[int, int], *, device, batch: int) -> torch.Tensor:
    """A mask in pixel or latent resolution → [batch or 1, 1, h, w] float32 in 0..1 at latent `size` (h, w).

    Resized bilinearly, as ComfyUI's `comfy.sample.prepare_mask` does, so a mask gives the same cells here
    and under KSampler. The batch is expanded to `batch` when the mask holds one per image."""
    m = mask.detach().to(device=device, dtype=torch.float32)
    m = m.reshape(-1, 1, *m.shape[-2:])
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m, size=size, mode="bilinear")
    m = m.clamp(0.0, 1.0)
    return m if m.shape[0] == 1 else m.expand(batch, -1, -1, -1)


def keep_outside(latents: torch.Tensor, mask: torch.Tensor, init: torch.Tensor, noise: torch.Tensor,
                 sigma: torch.Tensor | float) -> torch.Tensor:
    """Latents at noise level `sigma` with the masked-out part taken from `init` noised to that level along the
    flow path x_σ = (1-σ)·x0 + σ·ε (σ = 0 gives `init` itself). All tensors in the sampler's (scaled) space."""
    reference = (1.0 - sigma) * init + sigma * noise
    return mask * latents + (1.0 - mask) * reference
