"""OpenUni Sampler: conditioning → SANA flow-matching sampling → LATENT (text-to-image or image-to-image)."""

from __future__ import annotations

from . import comfy_services as comfy
from .common import CATEGORY, MODEL_TOOLTIP, MODEL_TYPE, latent_samples, log, require_model, side_problem
from .conditioning import from_comfy
from ..openuni_core.errors import OpenUniError
from ..openuni_core.options import (DEFAULT_CFG, DEFAULT_SAMPLER, DEFAULT_SEED, DEFAULT_STEPS, MAX_BATCH, MAX_CFG,
                                    MAX_SIDE, MAX_STEPS, MIN_SIDE, SAMPLERS, SEED_MAX, SPATIAL_COMPRESSION)


class OpenUniSampler:
    DESCRIPTION = ("Samples OpenUni latents with SANA (flow matching, classifier-free guidance), exactly as diffusers' "
                   "SanaPipeline: the reference path. Connect a latent and lower denoise for image-to-image; a latent "
                   "with a noise mask (Set Latent Noise Mask) is inpainted. Decode with OpenUni VAE Decode or VAE "
                   "Decode. For ComfyUI's samplers, LoRA and model patches use KSampler with the loader's MODEL.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("OpenUni latents [batch, 32, height/32, width/32], for OpenUni VAE Decode or VAE Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        sampler_help = " ".join(f"{name}: {what}." for name, what in SAMPLERS.items())
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": MODEL_TOOLTIP}),
            "positive": ("CONDITIONING", {"tooltip": "From OpenUni Text Encode / Image Edit Encode. Several entries "
                                                     "(Conditioning Combine) give one image per entry (KSampler would "
                                                     "sum them instead). Conditioning (Concat) attends to both prompts: "
                                                     "their queries are repeated to a common length, as ComfyUI does, "
                                                     "which leaves cross-attention unchanged. Area, mask, strength and "
                                                     "timestep-range settings are refused here: KSampler with the "
                                                     "loader's MODEL applies them."}),
            "negative": ("CONDITIONING", {"tooltip": "The guidance branch, from the same encode node. Unused when "
                                                     "cfg is 1."}),
            "seed": ("INT", {"default": DEFAULT_SEED, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                             "tooltip": "Noise seed. The noise is drawn on the CPU, so a seed gives the same image on "
                                        "any device."}),
            "steps": ("INT", {"default": DEFAULT_STEPS, "min": 1, "max": MAX_STEPS,
                              "tooltip": f"Denoising steps (reference: {DEFAULT_STEPS})."}),
            "cfg": ("FLOAT", {"default": DEFAULT_CFG, "min": 0.0, "max": MAX_CFG, "step": 0.1, "round": 0.01,
                              "tooltip": f"Classifier-free guidance scale (reference: {DEFAULT_CFG}; 1 disables "
                                         "guidance)."}),
            "sampler": (list(SAMPLERS), {"default": DEFAULT_SAMPLER, "tooltip": sampler_help}),
            "width": ("INT", {"default": 512, "min": MIN_SIDE, "max": MAX_SIDE, "step": SPATIAL_COMPRESSION,
                              "tooltip": "Image width in pixels, a multiple of 32 (OpenUni-*-512: 512, OpenUni-L-1024: "
                                         "1024). Ignored when a latent is connected."}),
            "height": ("INT", {"default": 512, "min": MIN_SIDE, "max": MAX_SIDE, "step": SPATIAL_COMPRESSION,
                               "tooltip": "Image height in pixels, a multiple of 32. Ignored when a latent is "
                                          "connected."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH,
                                   "tooltip": "Images per conditioning entry. Ignored when a latent is connected "
                                              "(the latent's batch counts)."}),
        }, "optional": {
            "latent": ("LATENT", {"tooltip": "Optional start image as OpenUni latents (OpenUni VAE Encode or VAE "
                                             "Encode with the loader's VAE) for image-to-image. With a noise mask "
                                             "(Set Latent Noise Mask, VAE Encode (for Inpainting)) only the masked "
                                             "area changes; outside it the result is this latent."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "With a latent: how much to change it (1 = ignore it, lower keeps more "
                                             "of it). Without a latent it has no effect."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        return side_problem(width, height) or True

    def sample(self, model, positive, negative, seed, steps, cfg, sampler, width, height, batch_size,
               latent=None, denoise=1.0):
        require_model(model)
        init, strength, mask = None, 1.0, None
        if latent is not None:
            init, strength, mask = latent_samples(latent), denoise, latent.get("noise_mask")
            if init.ndim == 4:  # anything else is refused by the engine's check, with its message
                height, width = init.shape[-2] * SPATIAL_COMPRESSION, init.shape[-1] * SPATIAL_COMPRESSION
        elif isinstance(denoise, (int, float)) and denoise < 1.0:
            log.info("[OpenUni] denoise %.2f ignored: no latent is connected to the sampler", denoise)
        pos = from_comfy(positive, "positive", width=width, height=height)
        neg = from_comfy(negative, "negative", width=width, height=height)
        if init is not None and init.ndim == 4:
            batch_size = _batch_for_latent(init.shape[0], len(pos))
        native = comfy.native()
        preview = native.sampling_hooks(model, steps) if native is not None else None
        progress = None if preview is not None else comfy.Progress(1).update  # the preview hook moves the bar too
        latents = model.sample(pos, neg, width=width, height=height, steps=steps, cfg=cfg, seed=seed, sampler=sampler,
                               batch_size=batch_size, init_latents=init, strength=strength, noise_mask=mask,
                               progress=progress, preview=preview, interrupt=comfy.interrupt_hook())
        return ({"samples": latents},)


def _batch_for_latent(latent_batch: int, prompts: int) -> int:
    """With a latent, its batch decides: one prompt × N latents, or N prompts × N latents."""
    if prompts == latent_batch:
        return 1
    if prompts == 1:
        return latent_batch
    raise OpenUniError(f"The latent holds {latent_batch} images but the positive conditioning {prompts} prompts; "
                       "use one prompt, or one prompt per image.")
