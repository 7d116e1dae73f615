"""SANA flow-matching sampling, step for step what diffusers' SanaPipeline does (DESIGN §4).

We keep our own dozen-line loop rather than calling SanaPipeline because the pipeline wants a text
encoder/tokenizer, re-concatenates conditioning each step and offers no interrupt hook; the
schedulers themselves are diffusers', built from the SANA folder's scheduler config.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .errors import OpenUniError
from .reuse import constant_conditioning

SAMPLERS = {"dpmpp": "DPM-Solver++ (reference)", "euler": "Flow-matching Euler"}
MAX_SIDE = 4096
MAX_STEPS = 1000
LATENT_CHANNELS = 32
SCALE = 32


def validate(*, width: int, height: int, steps: int, cfg: float, sampler: str, batch_size: int = 1,
             strength: float = 1.0) -> None:
    """Every sampling argument checked up front, before any heavy work."""
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or v < SCALE or v > MAX_SIDE or v % SCALE:
            near = max(SCALE, min(MAX_SIDE, round(v / SCALE) * SCALE)) if isinstance(v, (int, float)) else 512
            raise OpenUniError(f"{name} {v} is not allowed: it must be a multiple of {SCALE} between {SCALE} and "
                               f"{MAX_SIDE} (DC-AE works on 32×32 pixel blocks). Try {near}.")
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise OpenUniError(f"steps {steps} is not allowed: use 1 to {MAX_STEPS} (the reference uses 20).")
    if not isinstance(cfg, (int, float)) or cfg != cfg or cfg < 0 or cfg > 100:
        raise OpenUniError(f"cfg {cfg} is not allowed: use 0 to 100 (1 disables guidance; the reference uses 4.5).")
    if sampler not in SAMPLERS:
        raise OpenUniError(f"Unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= 64:
        raise OpenUniError(f"batch_size {batch_size} is not allowed: use 1 to 64.")
    if not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise OpenUniError(f"denoise/strength {strength} is not allowed: it must be above 0 and at most 1.")


def make_scheduler(sampler: str, scheduler_config: dict):
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    if sampler == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(scheduler_config)
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=scheduler_config.get("num_train_timesteps", 1000),
                                           shift=scheduler_config.get("flow_shift", 3.0))


def initial_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Noise drawn on the CPU from the seed, so a seed gives the same image on every device (as ComfyUI does)."""
    gen = torch.Generator("cpu").manual_seed(int(seed) % (2**64))
    return torch.randn(shape, generator=gen, dtype=torch.float32)


def check_latents(latents: torch.Tensor, *, what: str = "latent") -> None:
    if latents.numel() == 0:
        raise OpenUniError(f"The {what} is empty (shape {list(latents.shape)}); it must hold at least one image.")
    if latents.ndim != 4 or latents.shape[1] != LATENT_CHANNELS:
        raise OpenUniError(f"The {what} has shape {list(latents.shape)}; OpenUni (DC-AE f32c32) latents are "
                           f"[batch, {LATENT_CHANNELS}, height/32, width/32]. Was it made by another model's VAE?")
    if not torch.isfinite(latents).all():
        raise OpenUniError(f"The {what} contains NaN or infinite values; it cannot be sampled from.")


@torch.no_grad()
def sample(transformer, scheduler_config: dict, positive: torch.Tensor, negative: torch.Tensor | None, *,
           width: int, height: int, steps: int, cfg: float, seed: int, sampler: str = "dpmpp", batch_size: int = 1,
           init_latents: torch.Tensor | None = None, strength: float = 1.0, noise: torch.Tensor | None = None,
           progress: Callable[[int, int], None] | None = None, interrupt: Callable[[], None] | None = None) -> torch.Tensor:
    """Return final latents [B,32,H/32,W/32] (float32, on the transformer's device).

    positive: [P,256,C] query conditioning; the batch is P × batch_size images. negative: [1 or P,256,C].
    init_latents/strength: image-to-image — start from those latents noised to `strength`.
    """
    validate(width=width, height=height, steps=steps, cfg=cfg, sampler=sampler, batch_size=batch_size, strength=strength)
    device, dtype = transformer.device, transformer.dtype
    use_cfg = cfg != 1.0 and negative is not None

    # 1. Conditioning: one [negative; positive] batch, prepared once for all steps.
    cond = positive.repeat_interleave(batch_size, 0)
    n = cond.shape[0]
    if use_cfg:
        neg = negative.expand(n, -1, -1) if negative.shape[0] == 1 else negative.repeat_interleave(batch_size, 0)
        if neg.shape[0] != n:
            raise OpenUniError(f"Negative conditioning has {negative.shape[0]} rows for {positive.shape[0]} prompts; "
                               "give one negative, or one per prompt.")
        cond = torch.cat([neg, cond])
    cond = cond.to(device=device, dtype=dtype)
    mask = torch.ones(cond.shape[:2], device=device, dtype=torch.long)

    # 2. Timesteps; image-to-image starts part-way along them.
    scheduler = make_scheduler(sampler, scheduler_config)
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    start = 0
    if init_latents is not None:
        start = steps - int(steps * strength)
        if start >= steps:
            raise OpenUniError(f"denoise {strength} leaves no step to run out of {steps}; raise denoise or steps.")
        timesteps = timesteps[start * scheduler.order:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start * scheduler.order)

    # 3. Initial latents: CPU noise (seeded), noised init latents for image-to-image.
    shape = (n, LATENT_CHANNELS, height // SCALE, width // SCALE)
    if noise is None:
        noise = initial_noise(seed, shape)
    latents = noise.to(device)
    if init_latents is not None:
        check_latents(init_latents)
        x0 = init_latents.to(device=device, dtype=torch.float32)
        if x0.shape[-2:] != shape[-2:]:
            raise OpenUniError(f"The input latent is {x0.shape[-1] * SCALE}×{x0.shape[-2] * SCALE} pixels but "
                               f"{width}×{height} was asked; use the latent's size.")
        if x0.shape[0] not in (1, n):
            raise OpenUniError(f"The input latent holds {x0.shape[0]} images for a batch of {n}.")
        sigma = scheduler.sigmas[start * scheduler.order].to(device=device, dtype=torch.float32)
        latents = (1.0 - sigma) * x0.expand(n, -1, -1, -1) + sigma * latents

    # 4. Denoising loop (conditioning projections computed once, see reuse.py).
    t_scale = float(getattr(transformer.config, "timestep_scale", 1.0))
    learned_sigma = transformer.config.out_channels // 2 == LATENT_CHANNELS
    # A compiled transformer fuses these itself; the memo's Python-side checks would only break its graph.
    compiled = hasattr(transformer, "_orig_mod")
    with contextlib.nullcontext() if compiled else constant_conditioning(transformer):
        for i, t in enumerate(timesteps):
            if interrupt is not None:
                interrupt()
            model_in = torch.cat([latents, latents]) if use_cfg else latents
            v = transformer(model_in.to(dtype), encoder_hidden_states=cond, encoder_attention_mask=mask,
                            timestep=t.expand(model_in.shape[0]) * t_scale, return_dict=False)[0].float()
            if use_cfg:
                v_uncond, v_text = v.chunk(2)
                v = v_uncond + cfg * (v_text - v_uncond)
            if learned_sigma:
                v = v.chunk(2, dim=1)[0]
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
            if progress is not None:
                progress(i + 1, len(timesteps))
    return latents
