"""The few nodes the OpenUni MODEL needs beside ComfyUI's own: with MODEL / VAE / LATENT in ComfyUI's conventions,
KSampler, SamplerCustom(Advanced), the VAE nodes, Set Latent Noise Mask, LoRA and model patches work as they are.

- OpenUni Empty Latent: EmptyLatentImage makes [B,4,H/8,W/8]; OpenUni needs [B,32,H/32,W/32].
- OpenUni Scheduler: the reference sigmas (no core scheduler gives the DPM-Solver++ ones).
- OpenUni DPM-Solver++: the reference sampler as a SAMPLER (ComfyUI's dpmpp_2m is another solver on flow models).
- OpenUni LoRA Loader (model only): diffusers/PEFT SANA LoRAs, whose names the core loader does not map.

These classes import no ComfyUI module at import time, so the pack lists them without ComfyUI.
"""

from __future__ import annotations

import torch

from . import comfy_services as comfy
from .common import CATEGORY, side_problem
from ..openuni_core.errors import OpenUniError
from ..openuni_core.options import (DEFAULT_STEPS, LATENT_CHANNELS, MAX_BATCH, MAX_SIDE, MAX_STEPS, MIN_SIDE,
                                    SPATIAL_COMPRESSION)

MODEL_INPUT = ("MODEL", {"tooltip": "The MODEL output of OpenUni Model Loader (or a patched/LoRA copy of it)."})


def _native():
    native = comfy.native()
    if native is None:
        raise OpenUniError("This node needs ComfyUI's model classes (comfy.model_base, comfy.sd), which this ComfyUI "
                           "does not have; update ComfyUI, or use OpenUni Sampler.")
    return native


class OpenUniEmptyLatent:
    DESCRIPTION = ("Empty OpenUni latents (DC-AE f32c32: 32 channels, one cell per 32×32 pixels) for KSampler with the "
                   "OpenUni MODEL. ComfyUI's Empty Latent Image makes latents for 8× autoencoders, which do not fit.")
    CATEGORY = CATEGORY
    FUNCTION = "generate"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = (f"Zeros [batch, {LATENT_CHANNELS}, height/32, width/32].",)

    @classmethod
    def INPUT_TYPES(cls):
        side = {"default": 512, "min": MIN_SIDE, "max": MAX_SIDE, "step": SPATIAL_COMPRESSION}
        return {"required": {
            "width": ("INT", {**side, "tooltip": "Image width in pixels, a multiple of 32."}),
            "height": ("INT", {**side, "tooltip": "Image height in pixels, a multiple of 32."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH, "tooltip": "Images per run."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        return side_problem(width, height) or True

    def generate(self, width, height, batch_size=1):
        problem = side_problem(width, height)
        if problem:
            raise OpenUniError(problem)
        mm = comfy.model_management()
        device = mm.intermediate_device() if mm is not None and hasattr(mm, "intermediate_device") else "cpu"
        shape = (batch_size, LATENT_CHANNELS, height // SPATIAL_COMPRESSION, width // SPATIAL_COMPRESSION)
        return ({"samples": torch.zeros(shape, device=device)},)


class OpenUniScheduler:
    DESCRIPTION = ("OpenUni's reference noise schedules as SIGMAS for SamplerCustom / SamplerCustomAdvanced: 'dpmpp' "
                   "(for OpenUni DPM-Solver++) and 'euler' (for the euler sampler), exactly as diffusers' schedulers "
                   "make them for SANA, with the MODEL's flow shift (ModelSamplingSD3 changes it). denoise works as "
                   "in OpenUni Sampler: the last steps·denoise steps of a steps-step schedule.")
    CATEGORY = CATEGORY
    FUNCTION = "get_sigmas"
    RETURN_TYPES = ("SIGMAS",)
    RETURN_NAMES = ("sigmas",)
    OUTPUT_TOOLTIPS = ("Noise levels from 1 (or less with denoise < 1) down to 0.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": MODEL_INPUT,
            "schedule": (["dpmpp", "euler"], {"default": "dpmpp", "tooltip": "dpmpp: DPM-Solver++'s schedule (the "
                                              "reference). euler: flow-matching Euler's (equal to KSampler's "
                                              "'normal' scheduler on this MODEL)."}),
            "steps": ("INT", {"default": DEFAULT_STEPS, "min": 1, "max": MAX_STEPS, "tooltip": "Steps of the whole "
                                                                                              "schedule."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "Below 1 (image-to-image): keep only the last steps·denoise steps."}),
        }}

    def get_sigmas(self, model, schedule, steps, denoise=1.0):
        _native()
        from .native import schedule as sched

        return (sched.schedule(model.get_model_object("model_sampling"), schedule, steps, denoise),)


class OpenUniDPMSolverSampler:
    DESCRIPTION = ("OpenUni's reference sampler, DPM-Solver++ 2M for flow matching exactly as diffusers runs SANA, as "
                   "a SAMPLER for SamplerCustom / SamplerCustomAdvanced. Use it with OpenUni Scheduler (dpmpp) to get "
                   "OpenUni Sampler's dpmpp result. ComfyUI's dpmpp_2m is a different solver on flow models.")
    CATEGORY = CATEGORY
    FUNCTION = "get_sampler"
    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("sampler",)
    OUTPUT_TOOLTIPS = ("The flow DPM-Solver++ sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def get_sampler(self):
        _native()
        from .native.schedule import OpenUniDPMSolverPP

        return (OpenUniDPMSolverPP(),)


class OpenUniLoraLoader:
    DESCRIPTION = ("Applies a SANA LoRA to the OpenUni MODEL: diffusers/PEFT files (transformer.…lora_A/lora_B, as "
                   "diffusers and peft write them, alpha read from the file's metadata), kohya (lora_unet_…), "
                   "OneTrainer and LyCORIS names. A file for another model is refused with its unmatched keys.")
    CATEGORY = CATEGORY
    FUNCTION = "load_lora"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The MODEL with the LoRA (the input is unchanged).",)

    @classmethod
    def INPUT_TYPES(cls):
        fp = comfy.folder_paths()
        names = fp.get_filename_list("loras") if fp is not None and hasattr(fp, "get_filename_list") else []
        return {"required": {
            "model": MODEL_INPUT,
            "lora_name": (names, {"tooltip": "A SANA LoRA in models/loras/."}),
            "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01,
                                         "tooltip": "How strongly the LoRA applies (0: not at all; negative inverts)."}),
        }}

    def load_lora(self, model, lora_name, strength_model):
        _native()
        from comfy.utils import load_torch_file

        from .native.lora import apply_lora

        if strength_model == 0:
            return (model,)
        path = comfy.folder_paths().get_full_path_or_raise("loras", lora_name)
        lora, metadata = load_torch_file(path, safe_load=True, return_metadata=True)
        return (apply_lora(model, lora, strength_model, metadata, name=lora_name),)
