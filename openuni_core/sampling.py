"""SANA flow-matching sampling, step for step what diffusers' SanaPipeline does with its DPM-Solver++ scheduler
(and the flow-matching Euler scheduler SANA was trained with).

Why our own dozen-line loop instead of calling SanaPipeline: the pipeline has no image-to-image start point
(`strength`), so img2img and upscale refinement need a loop of their own anyway; and we wrap the transformer's
conditioning-only projections in a per-call memo (reuse.py) that must live exactly as long as one sampling
call. The schedulers are diffusers' own, built from the SANA folder's scheduler config, and tests hold this
loop to SanaPipeline's output on the same weights and noise.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .conditioning import same_token_count
from .errors import OpenUniError
from .inpaint import check_mask, keep_outside, latent_mask
from .precision import check_finite
from .options import (DEFAULT_SEED, LATENT_CHANNELS, MAX_BATCH, MAX_CFG, MAX_SIDE, MAX_STEPS, MIN_SIDE, SAMPLERS,
                      SEED_MAX, SPATIAL_COMPRESSION)
from .reuse import constant_conditioning


def check_settings(*, width: int | None, height: int | None, steps: int, cfg: float, sampler: str,
                   batch_size: int = 1, strength: float = 1.0, seed: int = DEFAULT_SEED) -> None:
    """Raise OpenUniError, naming the value and the fix, for any sampling setting outside options.py's limits.
    A side that is None is not known yet (a host checks the rest before it knows the size) and is skipped."""
    for name, v in (("width", width), ("height", height)):
        if v is not None:
            check_side(name, v)
    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise OpenUniError(f"steps {steps} is not allowed: use 1 to {MAX_STEPS} (the reference uses 20).")
    if not isinstance(cfg, (int, float)) or cfg != cfg or cfg < 0 or cfg > MAX_CFG:
        raise OpenUniError(f"cfg {cfg} is not allowed: use 0 to {MAX_CFG:g} (1 disables guidance; the reference uses 4.5).")
    if sampler not in SAMPLERS:
        raise OpenUniError(f"Unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise OpenUniError(f"batch_size {batch_size} is not allowed: use 1 to {MAX_BATCH}.")
    if not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise OpenUniError(f"denoise/strength {strength} is not allowed: it must be above 0 and at most 1.")
    if strength < 1 and int(steps * strength) < 1:
        raise OpenUniError(f"denoise {strength} leaves no step to run out of {steps}; raise denoise or steps.")
    check_seed(seed)


def check_seed(seed) -> None:
    """A seed is a whole number from 0 to options.SEED_MAX (ComfyUI's seed widget range); anything else is refused
    rather than wrapped around."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise OpenUniError(f"seed {seed!r} is not allowed: use a whole number from 0 to {SEED_MAX}.")


def check_side(name: str, v) -> None:
    """One image side: a multiple of SPATIAL_COMPRESSION within [MIN_SIDE, MAX_SIDE]; the message suggests the nearest."""
    step = SPATIAL_COMPRESSION
    if not isinstance(v, int) or isinstance(v, bool) or v < MIN_SIDE or v > MAX_SIDE or v % step:
        near = max(MIN_SIDE, min(MAX_SIDE, round(v / step) * step)) if isinstance(v, (int, float)) and v == v else 512
        raise OpenUniError(f"{name} {v} is not allowed: it must be a multiple of {step} between {MIN_SIDE} and "
                           f"{MAX_SIDE} (DC-AE works on {step}×{step} pixel blocks). Try {near}.")


def check_latents(latents: torch.Tensor, *, what: str = "latent") -> None:
    """Raise OpenUniError unless `latents` is a non-empty, finite [B, 32, h, w] tensor."""
    if latents.numel() == 0:
        raise OpenUniError(f"The {what} is empty (shape {list(latents.shape)}); it must hold at least one image. "
                           "Connect a latent that holds images (e.g. from OpenUni VAE Encode).")
    if latents.ndim != 4 or latents.shape[1] != LATENT_CHANNELS:
        raise OpenUniError(f"The {what} has shape {list(latents.shape)}; OpenUni (DC-AE f32c32) latents are "
                           f"[batch, {LATENT_CHANNELS}, height/32, width/32]. Was it made by another model's VAE?")
    if not torch.isfinite(latents).all():
        raise OpenUniError(f"The {what} contains NaN or infinite values; it cannot be sampled from.")


def check_start(init_latents: torch.Tensor | None, noise_mask: torch.Tensor | None, *, width: int, height: int,
                batch: int) -> None:
    """Raise OpenUniError unless the start latents (image-to-image; already through `check_latents`) fit the asked
    size and `batch` images, and a noise_mask (inpainting) comes with latents and fits them (inpaint.check_mask)."""
    if init_latents is not None:
        h, w = (s * SPATIAL_COMPRESSION for s in init_latents.shape[-2:])
        if (w, h) != (width, height):
            raise OpenUniError(f"The input latent is {w}×{h} pixels but {width}×{height} was asked; use the "
                               "latent's size.")
        if init_latents.shape[0] not in (1, batch):
            raise OpenUniError(f"The input latent holds {init_latents.shape[0]} images for a batch of {batch}.")
    if noise_mask is not None:
        if init_latents is None:
            raise OpenUniError("A noise mask needs the latent it applies to; connect a latent (e.g. from VAE "
                               "Encode) to inpaint.")
        check_mask(noise_mask, batch=batch)


def make_scheduler(sampler: str, scheduler_config: dict):
    """diffusers' DPMSolverMultistepScheduler from the SANA folder's config ("dpmpp"), or the flow-matching Euler
    scheduler with the same shift ("euler")."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    if sampler == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(scheduler_config)
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=scheduler_config.get("num_train_timesteps", 1000),
                                           shift=scheduler_config.get("flow_shift", 3.0))


def initial_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Noise drawn on the CPU from the seed, so a seed gives the same image on every device (as ComfyUI does)."""
    gen = torch.Generator("cpu").manual_seed(int(seed) % (2**64))
    return torch.randn(shape, generator=gen, dtype=torch.float32)


def first_step(steps: int, strength: float) -> int:
    """Image-to-image skips the first steps of the schedule: the index of the first step that runs."""
    return steps - int(steps * strength) if strength < 1 else 0


@torch.no_grad()
def sample(transformer, scheduler_config: dict, positive: torch.Tensor, negative: torch.Tensor | None, *,
           width: int, height: int, steps: int, cfg: float, seed: int, sampler: str = "dpmpp", batch_size: int = 1,
           init_latents: torch.Tensor | None = None, strength: float = 1.0, noise: torch.Tensor | None = None,
           noise_mask: torch.Tensor | None = None, scaling_factor: float = 1.0,
           progress: Callable[[int, int], None] | None = None, interrupt: Callable[[], None] | None = None,
           preview: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Return final latents [P·batch_size, 32, height/32, width/32] in the autoencoder's own space (float32, on the
    transformer's device): SANA denoises latents × `scaling_factor` (the DC-AE config's), and the result is divided
    by it again, so latents enter and leave unscaled, as ComfyUI's LATENT holds them.

    positive: [P,T,C] query conditioning (T = 256, or a multiple for concatenated prompts); negative: [1 or P,T',C]
    or None (no guidance); different T are repeated to a common length (conditioning.same_token_count).
    init_latents [1 or P·batch_size,32,h,w] / strength in (0,1]: image-to-image, starting from those latents
    noised to the schedule's sigma at step `first_step(steps, strength)`. noise_mask (with init_latents): where
    the image may change, 1 = repaint, 0 = keep, any resolution (inpaint.py); the result equals init_latents
    where it is 0. Arguments are trusted: OpenUniModel.check_inputs checked them. progress(i, n) after each
    step; interrupt() before each (it raises to stop); preview(i, n, x0) after each step with the step's
    prediction of the final latents (unscaled, like the result), for live previews.
    Raises precision.NonFiniteError when SANA's output holds inf/NaN (OpenUniModel.sample re-runs or explains it).
    """
    device, dtype = transformer.device, transformer.dtype
    use_cfg = cfg != 1.0 and negative is not None

    # 1. Conditioning: one [negative; positive] batch, prepared once for all steps.
    cond = positive.repeat_interleave(batch_size, 0)
    n = cond.shape[0]
    if use_cfg:
        neg = negative.expand(n, -1, -1) if negative.shape[0] == 1 else negative.repeat_interleave(batch_size, 0)
        cond = torch.cat(same_token_count(neg, cond))
    cond = cond.to(device=device, dtype=dtype)
    mask = torch.ones(cond.shape[:2], device=device, dtype=torch.long)

    # 2. Timesteps; image-to-image starts part-way along them.
    scheduler = make_scheduler(sampler, scheduler_config)
    scheduler.set_timesteps(steps, device=device)
    start = first_step(steps, strength) if init_latents is not None else 0
    timesteps = scheduler.timesteps[start * scheduler.order:]
    if hasattr(scheduler, "set_begin_index"):
        # Always, not only part-way: above 500 steps DPM-Solver++'s first timesteps repeat ([999, 999, 998, ...]),
        # and a scheduler left to find its start by the first timestep's value picks the second index and runs one
        # step past the end (IndexError after the whole run). Below that the two give the same index.
        scheduler.set_begin_index(start * scheduler.order)

    # 3. Initial latents: CPU noise (seeded), noised init latents for image-to-image.
    shape = (n, LATENT_CHANNELS, height // SPATIAL_COMPRESSION, width // SPATIAL_COMPRESSION)
    noise = latents = (initial_noise(seed, shape) if noise is None else noise).to(device)
    keep = None
    if init_latents is not None:
        x0 = init_latents.to(device=device, dtype=torch.float32).expand(n, -1, -1, -1) * scaling_factor
        sigma = scheduler.sigmas[start * scheduler.order].to(device=device, dtype=torch.float32)
        latents = (1.0 - sigma) * x0 + sigma * latents
        if noise_mask is not None:
            keep = latent_mask(noise_mask, shape[-2:], device=device, batch=n)
    sigmas = scheduler.sigmas.to(device=device, dtype=torch.float32)

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
            check_finite(v, "sana", f"at step {i + 1} of {len(timesteps)}")  # fp16 overflow: see precision.py
            if use_cfg:
                v_uncond, v_text = v.chunk(2)
                v = v_uncond + cfg * (v_text - v_uncond)
            if learned_sigma:
                v = v.chunk(2, dim=1)[0]
            k = start * scheduler.order + i  # index of this step's sigma
            if preview is not None:  # flow prediction: x0 = x_σ - σ·v
                x0_hat = latents - sigmas[k] * v
                x0_hat = x0_hat if keep is None else keep_outside(x0_hat, keep, x0, noise, 0.0)
                preview(i + 1, len(timesteps), x0_hat / scaling_factor)
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
            if keep is not None:
                latents = keep_outside(latents, keep, x0, noise, sigmas[k + 1] if i + 1 < len(timesteps) else 0.0)
            if progress is not None:
                progress(i + 1, len(timesteps))
    return latents / scaling_factor
