"""OpenUni Model Loader: files from the model folders → OPENUNI_MODEL, and SANA / DC-AE as ComfyUI MODEL / VAE."""

from __future__ import annotations

from . import comfy_services as comfy
from . import model_cache, model_files
from .common import CATEGORY, MODEL_TYPE
from ..openuni_core import files as core_files
from ..openuni_core.errors import OpenUniError
from ..openuni_core.options import ATTENTION_KERNELS, PRECISIONS

# What the user reads → the core's policy (options.MEMORY_POLICIES). Named by what they do on any device; on the
# CPU (ComfyUI --cpu) every part computes in RAM anyway and all three behave alike.
MEMORY_POLICIES = {
    "keep parts loaded": "none",
    "stream InternVL3 to encode": "mllm",
    "stream InternVL3; load SANA, DC-AE only while used": "sequential",
}
# The labels of versions before 0.3 (saved workflows hold them): still accepted.
OLD_MEMORY_LABELS = {"keep all on GPU": "none", "offload MLLM to CPU after encoding": "mllm",
                     "sequential offload (low VRAM)": "sequential"}
SAME_DEVICE = "same as the model"
LICENSE_NOTE = ("OpenUni's released weights are under the NTU S-Lab License 1.0 (non-commercial); InternVL3 and "
                "SANA come with their own licenses, which govern the files you load.")


class OpenUniModelLoader:
    DESCRIPTION = ("Loads OpenUni (InternVL3 + meta queries + SANA + DC-AE) from models/openuni/. Besides the OpenUni "
                   "model it gives SANA as a ComfyUI MODEL and DC-AE as a VAE, for KSampler, VAE Decode, LoRA and "
                   "model patches. Loaded once while these inputs are unchanged. " + LICENSE_NOTE)
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL_TYPE, "MODEL", "VAE")
    RETURN_NAMES = ("model", "MODEL", "VAE")
    OUTPUT_TOOLTIPS = ("The loaded OpenUni model, for the OpenUni encode, sampler, VAE and caption nodes.",
                       "SANA as a ComfyUI MODEL (flow matching, shift from the SANA folder) for KSampler, "
                       "SamplerCustom, LoRA and model patches; conditioning from OpenUni Text Encode.",
                       "DC-AE as a ComfyUI VAE for the core VAE Decode / Encode (also Tiled, for Inpainting).")

    @classmethod
    def INPUT_TYPES(cls):
        folders = "Pick a folder, or 'auto' to use the standard folder for the checkpoint's variant "
        return {"required": {
            "checkpoint": (model_files.checkpoint_choices(), {
                "tooltip": "OpenUni checkpoint (.pth or .safetensors) in models/openuni/. Released names not yet "
                           "downloaded are listed too; run with download_missing on to fetch one. " + LICENSE_NOTE}),
            "mllm": (model_files.folder_choices("mllm"), {
                "tooltip": folders + "(InternVL3-1B for OpenUni-B, InternVL3-2B for OpenUni-L) from "
                           "models/openuni/mllm/ or models/LLM/. Original OpenGVLab and -hf formats both work."}),
            "sana": (model_files.folder_choices("sana"), {
                "tooltip": folders + "(the SANA diffusers folder the checkpoint was trained on) from "
                           "models/openuni/sana/ or models/diffusers/."}),
            "vae": (model_files.folder_choices("vae"), {
                "tooltip": folders + "(dc-ae-f32c32-sana-1.1-diffusers) from models/openuni/vae/ or "
                           "models/diffusers/; 'auto' also accepts a vae/ folder inside the SANA folder."}),
            "precision": (list(PRECISIONS), {
                "default": "auto",
                "tooltip": "What InternVL3 and SANA compute in. auto: bf16 on GPUs with native bf16 (RTX 30xx, A100 and "
                           "newer), fp16 on older GPUs (T4, RTX 20xx, V100), fp32 on the CPU. DC-AE never runs in "
                           "fp16 (it overflows): bf16 where native, else fp32. If InternVL3 or SANA overflows in fp16, "
                           "that part is re-run in bf16/fp32 and the console says so."}),
            "memory": (list(MEMORY_POLICIES), {
                "default": "keep parts loaded",
                "tooltip": "keep parts loaded: each part is loaded whole when used and ComfyUI keeps it until it "
                           "needs the room (fastest). stream InternVL3: InternVL3 stays in RAM; a new prompt is "
                           "encoded with one of its layers on the GPU at a time (repeat prompts are cached), "
                           "captioning loads it whole. load SANA, DC-AE only while used: they, too, leave the GPU "
                           "after each use (lowest VRAM, slower). On the CPU (ComfyUI --cpu) the three behave "
                           "alike. Older workflows' labels (keep all on GPU, ...) still load."}),
            "attention": (list(ATTENTION_KERNELS), {
                "default": "auto",
                "tooltip": "Attention kernel for InternVL3. auto: flash_attention_2 when installed on CUDA, else sdpa."}),
            "download_missing": ("BOOLEAN", {
                "default": False,
                "tooltip": "Off: never touches the network; missing files are listed with where to get them. On: "
                           "fetches the missing files of the chosen released checkpoint's variant from Hugging Face "
                           "into models/openuni/ (several GB)."}),
        }, "optional": {
            "mllm_device": (mllm_device_choices(), {
                "default": SAME_DEVICE,
                "tooltip": "Where InternVL3 runs: with SANA and DC-AE on ComfyUI's device (same as the model), on "
                           "the CPU, or on another GPU (for two-GPU machines). Note: ComfyUI's Unload models frees "
                           "only its main device."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, memory=None, mllm_device=None):
        """At queue time; also lets saved workflows with the older memory labels (or a GPU this machine does not
        have) through ComfyUI's own list check, to be answered here."""
        if memory is not None and memory_policy(memory, raise_error=False) is None:
            return f"Unknown memory setting {memory!r}; choose one of {', '.join(MEMORY_POLICIES)}."
        if mllm_device is not None and mllm_device not in mllm_device_choices():
            return (f"mllm_device {mllm_device!r} is not available on this machine; choose one of "
                    f"{', '.join(mllm_device_choices())}.")
        return True

    def load(self, checkpoint, mllm, sana, vae, precision, memory, attention, download_missing=False,
             mllm_device=SAME_DEVICE):
        policy = memory_policy(memory)
        if mllm_device not in mllm_device_choices():
            raise OpenUniError(self.VALIDATE_INPUTS(mllm_device=mllm_device))
        model_files.register_folders()
        variant = core_files.guess_variant(checkpoint)
        files = model_files.resolve(checkpoint, mllm, sana, vae)
        missing = _missing(files, variant, checkpoint)
        if missing:
            if not download_missing or variant is None:
                raise core_files.missing_error(missing, variant)
            core_files.download_variant(variant, model_files.layout(), checkpoint, mllm=files.mllm,
                                        sana=files.sana, vae=files.vae_dir, log=comfy.info)
            files = model_files.resolve(checkpoint, mllm, sana, vae)
            missing = _missing(files, variant, checkpoint)
            if missing:
                raise core_files.missing_error(missing, variant)
        native = comfy.native()
        device = comfy.torch_device()
        other = None if mllm_device == SAME_DEVICE else mllm_device
        key = (files.fingerprint(), precision, policy, attention, str(device), other, native is not None)
        model = model_cache.get(key)
        if model is None:
            model = _load(files, precision, policy, attention, device, other, native)
            model_cache.put(key, model)
        if native is None:
            return (model, None, None)
        parts = native.attach(model, policy=policy, mllm_device=other)
        return (model, parts.model, parts.vae)


def memory_policy(label: str, raise_error: bool = True) -> str | None:
    """The core policy of a memory label, this version's or an older one's."""
    policy = MEMORY_POLICIES.get(label) or OLD_MEMORY_LABELS.get(label)
    if policy is None and raise_error:
        raise OpenUniError(f"Unknown memory setting {label!r}; choose one of {', '.join(MEMORY_POLICIES)}.")
    return policy


def mllm_device_choices() -> list[str]:
    import torch

    return [SAME_DEVICE, "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def _load(files: core_files.ModelPaths, precision, policy, attention, device, mllm_device, native):
    from ..openuni_core.loading import load_openuni  # transformers/diffusers load only now

    kwargs = dict(dtype=precision, device=str(device) if device is not None else None, mllm_device=mllm_device,
                  attention=attention, log=comfy.info)
    if native is None:  # the engine places its parts itself, asking ComfyUI for room first
        model = load_openuni(files.checkpoint, files.mllm, files.sana, files.vae, offload=policy, **kwargs)
        model.placement.request_memory = comfy.free_memory
        return model
    # ComfyUI loads each part onto its device when it is used (nodes/native/parts.py): the weights are read into
    # RAM here, which the engine's "sequential" placement does on a GPU machine (its placement is replaced next).
    return load_openuni(files.checkpoint, files.mllm, files.sana, files.vae, offload="sequential", **kwargs)


def _missing(files: core_files.ModelPaths, variant, checkpoint: str) -> list:
    if variant is None:  # explicit picks of listed files/folders: they exist
        return []
    missing = core_files.missing_parts(variant, model_files.layout(), checkpoint, mllm=files.mllm,
                                       sana=files.sana, vae=files.vae_dir)
    # The core checks the checkpoint in the first models/openuni root; ours may sit in another registered one.
    return [m for m in missing if not (m.part == "checkpoint" and files.checkpoint.is_file())]
