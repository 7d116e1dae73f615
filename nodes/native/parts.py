"""The ComfyUI side of one loaded OpenUni engine: a ModelPatcher per part, and the engine's placement on top of them.

ComfyUI frees GPU memory only for models it loaded itself (`comfy.model_management.load_models_gpu`, which
keeps them in its list of loaded models): "Unload models" / "Free memory" (POST /free → unload_all_models),
its out-of-memory recovery and its room-making for other models all work on that list. So every OpenUni
part — InternVL3 with the query bridge, SANA (the MODEL output), DC-AE (the VAE output) — is a ModelPatcher,
and the engine asks for a part through `ComfyPlacement.use`, which loads it with load_models_gpu, as ComfyUI
does for its own VAE and text encoders. Nothing of ComfyUI is wrapped or replaced.

There is exactly ONE set of patchers per engine (`attach`): two patchers built separately over the same
modules are not clones to ComfyUI (ModelPatcher.is_clone compares the model object), so it would keep both
"loaded", move the shared modules away under one, or skip a LoRA's patches because the other marked the
modules patched. LoRA MODELs are `clone()`s of the one SANA patcher, and every SANA use goes through
load_models_gpu on the base patcher, so a LoRA clone loaded earlier is unpatched first.
"""

from __future__ import annotations

import contextlib
import weakref

import torch

import comfy.model_management as mm
import comfy.model_patcher

from . import diffusion, lowvram, preview
from .vae import OpenUniVAE
from ...openuni_core.placement import out_of_memory_as_error, param_bytes
from ...openuni_core.streaming import largest_layer_bytes, weights_on

OOM_ADVICE = ("ComfyUI unloads its models after this error; run again, or lower width/height or batch size, choose "
              "the loader's lower-memory setting, or start ComfyUI with --lowvram.")


class MLLMPart(torch.nn.Module):
    """InternVL3 + the query bridge as ONE module, so one ModelPatcher moves (and frees) both."""

    def __init__(self, mllm, bridge):
        super().__init__()
        self.mllm, self.bridge = mllm, bridge


class ComfyPlacement:
    """The engine's placement interface (`use(part, what, per_layer)`, `device(part)`) over ComfyUI's model
    management.

    policy (options.MEMORY_POLICIES): "none" loads InternVL3 whole to encode; "mllm" and "sequential" keep it in
    RAM and stream it layer by layer to encode a prompt (its one forward pass touches each weight once), after
    asking ComfyUI for that much room (public `free_memory`); "sequential" also unloads SANA and DC-AE after each
    use. Everything else — whole parts for sampling, decoding, captioning — is `load_models_gpu`, so ComfyUI
    decides what stays resident and what it evicts. Engine code runs on a whole part (force_full_load): it puts
    its inputs on the part's device; ComfyUI's own nodes (KSampler, VAE Decode) may load a part partially.
    """

    HEADROOM = {"mllm": 1 << 30, "sana": 1 << 30, "vae": 2 << 30}  # bytes beyond the weights, for activations

    def __init__(self, patchers: dict, policy: str, streamed: torch.nn.Module, on_host):
        self.patchers, self.policy, self.streamed, self.on_host = patchers, policy, streamed, on_host

    def device(self, part: str) -> torch.device:
        return torch.device(self.patchers[part].load_device)

    def dtype(self, part: str) -> torch.dtype:
        """The floating dtype the part computes in (the engine's precision recovery reads it)."""
        return next(p.dtype for p in self.patchers[part].model.parameters() if p.is_floating_point())

    def cast(self, part: str, dtype: torch.dtype) -> None:
        """Convert a part's weights to `dtype` after an fp16 overflow (openuni_core/precision.py). ComfyUI unloads it
        first, so no LoRA patch or weight backup of the old dtype survives, and its size is measured again."""
        patcher = self.patchers[part]
        unload(patcher)
        torch.nn.Module.to(patcher.model, dtype)  # diffusers' own `to` warns about fp32-kept modules (none here)
        patcher.size = 0  # ModelPatcher.model_size() caches the byte count; 0 makes ComfyUI measure it anew

    def _streams(self, part: str, per_layer: bool) -> bool:
        return per_layer and part == "mllm" and self.policy != "none" and self.device(part).type != "cpu"

    @contextlib.contextmanager
    def use(self, part: str, what: str, per_layer: bool = False):
        patcher, device = self.patchers[part], self.device(part)
        with out_of_memory_as_error(what, device, OOM_ADVICE):
            if self._streams(part, per_layer):
                placed = self._streamed(patcher, device)
            else:
                mm.load_models_gpu([patcher], memory_required=self.HEADROOM[part], force_full_load=True)
                placed = contextlib.nullcontext()
            with placed:
                yield
        if self.policy == "sequential" and part != "mllm" and device.type != "cpu":
            unload(patcher)

    def _streamed(self, patcher, device):
        """InternVL3 per layer, the bridge whole, the embedding tables where they are (streaming.weights_on)."""
        bridge = patcher.model.bridge
        on_host = self.on_host()
        mm.free_memory(param_bytes(bridge) + largest_layer_bytes(self.streamed, on_host) + self.HEADROOM["mllm"],
                       device)
        return weights_on(device, whole=[bridge], per_layer=[self.streamed], on_host=on_host)


def unload(patcher) -> None:
    """Have ComfyUI unload one model: free_memory on its device, keeping every other loaded model (free_memory's
    keep_loaded compares LoadedModel entries by their patcher)."""
    keep = [mm.LoadedModel(p) for p in mm.loaded_models() if p is not patcher]
    mm.free_memory(1e30, patcher.load_device, keep_loaded=keep)


class OpenUniComfyParts:
    """MODEL (SANA), VAE (DC-AE) and the InternVL3 patcher of one engine, and the placement over them. Holds the
    engine's modules, never the engine itself (the registry below is keyed weakly by it).

    mllm_device: where InternVL3 computes (None: ComfyUI's main device, like SANA)."""

    def __init__(self, engine, *, policy: str, mllm_device=None):
        scaling = float(engine.vae.config.scaling_factor)
        self.vae = OpenUniVAE(engine.vae)
        vae_patcher = self.vae.patcher
        dcae = engine.vae

        def rgb_source():
            return preview.latent_rgb(dcae, scaling, prepare=lambda: mm.load_models_gpu([vae_patcher],
                                                                                         force_full_load=True))

        self.latent_format = diffusion.OpenUniLatentFormat(scaling, rgb_source=rgb_source)
        self.model = diffusion.model_patcher(engine, self.latent_format)
        self.mllm = comfy.model_patcher.ModelPatcher(
            MLLMPart(engine.mllm, engine.bridge),
            load_device=torch.device(mllm_device) if mllm_device else mm.get_torch_device(),
            offload_device=mm.text_encoder_offload_device())
        lowvram.enable_partial_loading(self.mllm)
        tables = engine.embedding_tables()  # the modules, not the bound method: nothing here may hold the engine
        self.placement = ComfyPlacement({"mllm": self.mllm, "sana": self.model, "vae": vae_patcher}, policy,
                                        streamed=engine.mllm, on_host=lambda: tables)


_PARTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def attach(engine, *, policy: str, mllm_device=None) -> OpenUniComfyParts:
    """The ComfyUI parts of `engine`, made once; from then on the engine (and its prompt encoder) asks ComfyUI for
    its parts. Held weakly by the engine object: they live as long as ComfyUI's node cache holds the engine."""
    parts = _PARTS.get(engine)
    if parts is None:
        parts = OpenUniComfyParts(engine, policy=policy, mllm_device=mllm_device)
        engine.placement = parts.placement  # the engine hands it to its prompt encoder and answerer
        _PARTS[engine] = parts
    return parts


def parts_of(engine) -> OpenUniComfyParts | None:
    return _PARTS.get(engine)


def sampling_hooks(engine, steps: int):
    """(progress, preview) hooks for the engine's sampling: ComfyUI's progress bar with a live preview per step
    (latent_preview.prepare_callback, the hook KSampler uses), or None where the engine has no ComfyUI parts."""
    parts = parts_of(engine)
    if parts is None:
        return None
    import latent_preview

    callback = latent_preview.prepare_callback(parts.model, steps)
    fmt = parts.latent_format

    def show(i: int, n: int, x0: torch.Tensor) -> None:
        callback(i - 1, fmt.process_in(x0), None, n)

    return show
