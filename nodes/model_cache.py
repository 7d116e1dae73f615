"""Loaded OpenUni models: reuse while the loader's inputs are unchanged, and give memory back on request.

One model stays cached (the last one loaded); every live model is tracked weakly so ComfyUI's
"Unload models" / "Free memory" and its own requests for room can move them off the GPU. After such a
release a model keeps working: the next node that uses it puts it back per its memory policy.
"""

from __future__ import annotations

import threading
import weakref

import torch

from . import comfy_services as comfy

PARTS = ("mllm", "sana", "vae")

_lock = threading.RLock()
_last: tuple[tuple, object] | None = None
_policy: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def get(key: tuple):
    with _lock:
        if _last is not None and _last[0] == key:
            return _last[1]
    return None


def put(key: tuple, model) -> None:
    global _last
    with _lock:
        _last = (key, model)
        _policy[model] = {"offload": model.offload, "released": False}


def forget() -> None:
    """Drop the cached model (before loading another, so two never sit in memory at once)."""
    global _last
    with _lock:
        _last = None


def live_models() -> list:
    with _lock:
        return list(_policy.keys())


def part_modules(model, part: str) -> list[torch.nn.Module]:
    return {"mllm": [model.mllm, model.bridge], "sana": [model.transformer], "vae": [model.vae]}[part]


def part_bytes(model, part: str) -> int:
    return sum(p.numel() * p.element_size() for m in part_modules(model, part) for p in m.parameters())


def _same_device(a, b) -> bool:
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def _on_accelerator(model, device=None) -> bool:
    for part in PARTS:
        dev = model.devices[part]
        if dev.type != "cpu" and (device is None or _same_device(dev, device)):
            if any(p.device.type != "cpu" for m in part_modules(model, part) for p in m.parameters()):
                return True
    return False


def _release(model) -> bool:
    state = _policy.get(model)
    if state is None or not _on_accelerator(model):
        return False
    model.offload_all()
    state["released"] = True
    return True


def release_all() -> None:
    """ComfyUI's "Unload models" / "Free memory": move every OpenUni model to the CPU and drop our cache
    reference, so the model is freed entirely once ComfyUI's node cache lets go of it too."""
    released = [m for m in live_models() if _release(m)]
    forget()
    if released:
        comfy.soft_empty_cache()
    comfy.info(f"[OpenUni] memory released on request ({len(released)} model(s) moved to the CPU)")


def make_room(memory_required, device) -> None:
    """ComfyUI needs `memory_required` bytes on `device` for another model: offload ours if it is in the way."""
    if device is None or torch.device(device).type == "cpu":
        return
    for model in live_models():
        free = comfy.free_bytes(device)
        if free is not None and free >= memory_required:
            return
        if _on_accelerator(model, device) and _release(model):
            comfy.soft_empty_cache()
            comfy.info("[OpenUni] moved to the CPU to make room for another model")


def prepare(model, part: str) -> None:
    """Before a node uses `part`: undo an earlier release (restoring the chosen memory policy) and ask
    ComfyUI for room on the part's device."""
    state = _policy.get(model)
    if state is not None and state["released"]:
        state["released"] = False
        model.offload = state["offload"]
        # Workaround until the core has a public "restore placement": the same private helpers its
        # constructor uses to place parts per the policy.
        if hasattr(model, "_offloaded") and hasattr(model, "_move"):
            for p in PARTS:
                if model.devices[p].type != "cpu" and not model._offloaded(p):
                    comfy.free_memory(part_bytes(model, p), model.devices[p])
                    model._move(p, model.devices[p])
    device = model.devices[part]
    resident = all(p.device.type != "cpu" for m in part_modules(model, part) for p in m.parameters())
    if device.type != "cpu" and not resident:  # the core will bring it over for this call
        comfy.free_memory(part_bytes(model, part), device)


def install() -> bool:
    return comfy.install_memory_hooks(release_all, make_room)
