"""OpenUni Sampler: conditioning → SANA flow-matching sampling → LATENT (text-to-image or image-to-image)."""

from __future__ import annotations

import logging

import torch

from . import comfy_services as comfy
from .conditioning import from_comfy
from .encode import MODEL_TOOLTIP, require_model
from .loader import CATEGORY, MODEL_TYPE
from ..openuni_core.errors import OpenUniError
from ..openuni_core.sampling import MAX_SIDE, MAX_STEPS, SAMPLERS, SCALE, check_latents, validate

log = logging.getLogger("OpenUni")
SEED_MAX = 0xFFFFFFFFFFFFFFFF


class OpenUniSampler:
    DESCRIPTION = ("Samples OpenUni latents with SANA (flow matching, classifier-free guidance), exactly as diffusers' "
                   "SanaPipeline. Connect a latent and lower denoise for image-to-image. Decode with OpenUni VAE Decode.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("OpenUni latents [batch, 32, height/32, width/32], for OpenUni VAE Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": MODEL_TOOLTIP}),
            "positive": ("CONDITIONING", {"tooltip": "From OpenUni Text Encode / Image Edit Encode. Several entries "
                                                     "(Conditioning Combine) give one image per entry."}),
            "negative": ("CONDITIONING", {"tooltip": "The guidance branch, from the same encode node. Unused when "
                                                     "cfg is 1."}),
            "seed": ("INT", {"default": 42, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                             "tooltip": "Noise seed. The noise is drawn on the CPU, so a seed gives the same image on "
                                        "any device."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": MAX_STEPS,
                              "tooltip": "Denoising steps (reference: 20)."}),
            "cfg": ("FLOAT", {"default": 4.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale (reference: 4.5; 1 disables guidance)."}),
            "sampler": (list(SAMPLERS), {"default": "dpmpp", "tooltip": "dpmpp: DPM-Solver++ multistep, the "
                                         "reference sampler. euler: flow-matching Euler, as used in training."}),
            "width": ("INT", {"default": 512, "min": SCALE, "max": MAX_SIDE, "step": SCALE,
                              "tooltip": "Image width in pixels, a multiple of 32 (OpenUni-*-512: 512, OpenUni-L-1024: "
                                         "1024). Ignored when a latent is connected."}),
            "height": ("INT", {"default": 512, "min": SCALE, "max": MAX_SIDE, "step": SCALE,
                               "tooltip": "Image height in pixels, a multiple of 32. Ignored when a latent is "
                                          "connected."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64,
                                   "tooltip": "Images per conditioning entry. Ignored when a latent is connected "
                                              "(the latent's batch counts)."}),
        }, "optional": {
            "latent": ("LATENT", {"tooltip": "Optional start image as OpenUni latents (OpenUni VAE Encode) for "
                                             "image-to-image."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "With a latent: how much to change it (1 = ignore it, lower keeps more "
                                             "of it). Without a latent it has no effect."}),
        }}

    def sample(self, model, positive, negative, seed, steps, cfg, sampler, width, height, batch_size,
               latent=None, denoise=1.0):
        require_model(model)
        pos = from_comfy(positive, "positive")
        neg = from_comfy(negative, "negative")
        init, strength = None, 1.0
        if latent is not None:
            init = _latent_samples(latent)
            height, width = init.shape[-2] * SCALE, init.shape[-1] * SCALE
            batch_size = _batch_for_latent(init.shape[0], len(pos))
            strength = float(denoise)
        elif isinstance(denoise, (int, float)) and denoise < 1.0:
            log.info("[OpenUni] denoise %.2f ignored: no latent is connected to the sampler", denoise)
        # The core checks these again; checking here first keeps odd values (NaN denoise, …) out of the node's
        # own arithmetic, so every bad value gets the core's message.
        validate(width=width, height=height, steps=steps, cfg=cfg, sampler=sampler, batch_size=batch_size,
                 strength=strength)
        progress = comfy.Progress(max(1, round(steps * strength)))
        latents = model.sample(pos, neg, width=width, height=height, steps=steps, cfg=cfg, seed=seed, sampler=sampler,
                               batch_size=batch_size, init_latents=init, strength=strength,
                               progress=progress.update, interrupt=comfy.interrupt_hook())
        return ({"samples": latents},)


def _latent_samples(latent) -> torch.Tensor:
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise OpenUniError("The latent input must be a ComfyUI LATENT ({'samples': tensor}).")
    unused = sorted(k for k in latent if k not in ("samples", "batch_index"))
    if unused:
        log.warning("[OpenUni] latent: ignoring %s (not used by OpenUni's sampler)", unused)
    samples = latent["samples"].detach().to("cpu", torch.float32)
    check_latents(samples, what="latent input")  # not empty, 4-D with 32 channels, finite: before any work
    return samples


def _batch_for_latent(latent_batch: int, prompts: int) -> int:
    """With a latent, its batch decides: one prompt × N latents, or N prompts × N latents."""
    if prompts == latent_batch:
        return 1
    if prompts == 1:
        return latent_batch
    raise OpenUniError(f"The latent holds {latent_batch} images but the positive conditioning {prompts} prompts; "
                       "use one prompt, or one prompt per image.")
