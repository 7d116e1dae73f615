"""OpenUni Model Loader: files from the model folders → OPENUNI_MODEL (cached while its inputs are unchanged)."""

from __future__ import annotations

from pathlib import Path

from . import comfy_services as comfy
from . import model_cache, model_files
from .common import CATEGORY, MODEL_TYPE
from ..openuni_core import files as core_files
from ..openuni_core.errors import OpenUniError
from ..openuni_core.options import ATTENTION_KERNELS, PRECISIONS

MEMORY_POLICIES = {  # what the user reads → the core's policy (options.MEMORY_POLICIES)
    "keep all on GPU": "none",
    "offload MLLM to CPU after encoding": "mllm",
    "sequential offload (low VRAM)": "sequential",
}
LICENSE_NOTE = ("OpenUni's released weights are under the NTU S-Lab License 1.0 (non-commercial); InternVL3 and "
                "SANA come with their own licenses, which govern the files you load.")


class OpenUniModelLoader:
    DESCRIPTION = ("Loads OpenUni (InternVL3 + meta queries + SANA + DC-AE) from models/openuni/. The loaded model "
                   "is reused until an input here changes. " + LICENSE_NOTE)
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded OpenUni model, for the OpenUni encode, sampler, VAE and caption nodes.",)

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
                "default": "keep all on GPU",
                "tooltip": "keep all on GPU: fastest. offload MLLM: InternVL3 stays in CPU RAM; a new prompt is encoded "
                           "with one of its layers on the GPU at a time (repeat prompts are cached), captioning brings "
                           "it in whole. sequential: SANA and DC-AE too are on the GPU only while they run (lowest "
                           "VRAM, slower)."}),
            "attention": (list(ATTENTION_KERNELS), {
                "default": "auto",
                "tooltip": "Attention kernel for InternVL3. auto: flash_attention_2 when installed on CUDA, else sdpa."}),
            "download_missing": ("BOOLEAN", {
                "default": False,
                "tooltip": "Off: never touches the network; missing files are listed with where to get them. On: "
                           "fetches the missing files of the chosen released checkpoint's variant from Hugging Face "
                           "into models/openuni/ (several GB)."}),
        }}

    def load(self, checkpoint, mllm, sana, vae, precision, memory, attention, download_missing=False):
        if memory not in MEMORY_POLICIES:
            raise OpenUniError(f"Unknown memory policy {memory!r}; choose one of {', '.join(MEMORY_POLICIES)}.")
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
        device = comfy.torch_device()
        key = (files.fingerprint(), precision, memory, attention, str(device))
        model = model_cache.get(key)
        if model is not None:
            return (model,)
        from ..openuni_core.loading import inspect_openuni, load_openuni  # transformers/diffusers load only now

        # Validate the new files cheaply first: a bad choice must not throw away the working model.
        found = inspect_openuni(files.checkpoint, files.mllm, files.sana, files.vae)
        model_cache.forget()
        comfy.free_memory(_resident_bytes(files, precision, MEMORY_POLICIES[memory], found.checkpoint_groups,
                                          device), device)

        model = load_openuni(files.checkpoint, files.mllm, files.sana, files.vae, dtype=precision,
                             device=str(device) if device is not None else None,
                             offload=MEMORY_POLICIES[memory], attention=attention, log=comfy.info)
        model_cache.put(key, model)
        return (model,)


def _missing(files: core_files.ModelPaths, variant, checkpoint: str) -> list:
    if variant is None:  # explicit picks of listed files/folders: they exist
        return []
    missing = core_files.missing_parts(variant, model_files.layout(), checkpoint, mllm=files.mllm,
                                       sana=files.sana, vae=files.vae_dir)
    # The core checks the checkpoint in the first models/openuni root; ours may sit in another registered one.
    return [m for m in missing if not (m.part == "checkpoint" and files.checkpoint.is_file())]


def _resident_bytes(files: core_files.ModelPaths, precision: str, policy: str, checkpoint_groups,
                    device) -> int:
    """What the loaded model will keep on `device`, from the weights on disk (bf16 in the releases; fp32
    doubles them). Parts the memory policy offloads are not counted: each asks ComfyUI for room itself
    when it comes in, so choosing an offload policy does not evict the user's other models for nothing."""
    def size(folder: Path) -> int:
        return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))

    # The checkpoint holds the queries and connector, and usually a whole fine-tuned SANA that replaces the
    # folder's (then the folder's weights are never loaded).
    sana = files.checkpoint.stat().st_size
    if "transformer" not in checkpoint_groups:
        sana += size(files.sana / "transformer")
    vae = size(files.vae_dir)
    on_accelerator = device is not None and getattr(device, "type", str(device)) != "cpu"
    if on_accelerator and policy == "sequential":
        total = 0
    elif on_accelerator and policy == "mllm":
        total = sana + vae
    else:
        total = size(files.mllm) + sana + vae
    return total * (2 if precision == "fp32" else 1)
