"""Loaded OpenUni models: reuse while the loader's inputs are unchanged, and give memory back on request.

One model stays cached (the last one loaded); every live model is tracked weakly so ComfyUI's
"Unload models" / "Free memory" and its own requests for room can move them off the GPU. After such a
release a model keeps working: the core brings each part back, per its memory policy, when it is next
used, and asks ComfyUI for room first (`model.request_memory`).
"""

from __future__ import annotations

import threading
import weakref

import torch

from . import comfy_services as comfy

_lock = threading.RLock()
_last: tuple[tuple, object] | None = None
_live: "weakref.WeakSet" = weakref.WeakSet()


def get(key: tuple):
    with _lock:
        if _last is not None and _last[0] == key:
            return _last[1]
    return None


def put(key: tuple, model) -> None:
    """Cache a freshly loaded model; from now on it asks ComfyUI for room before a part moves onto a GPU."""
    global _last
    model.placement.request_memory = comfy.free_memory  # OpenUni's own requests: never turned back on OpenUni
    with _lock:
        _last = (key, model)
        _live.add(model)


def forget() -> None:
    """Drop the cached model (before loading another, so two never sit in memory at once)."""
    global _last
    with _lock:
        _last = None


def live_models() -> list:
    with _lock:
        return list(_live)


def _same_device(a, b) -> bool:
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def _uses(model, device) -> bool:
    return any(_same_device(where, device) for where in model.placement.where().values())


def release_all() -> None:
    """ComfyUI's "Unload models" / "Free memory": park every OpenUni model on the CPU (each part comes back,
    per its memory policy, the next time a node uses it) and drop our cache reference, so the model is freed
    entirely once ComfyUI's node cache lets go of it too."""
    released = 0
    for model in live_models():
        if model.placement.on_accelerator():
            model.placement.offload_all()
            released += 1
    forget()
    if released:
        comfy.soft_empty_cache()
    comfy.info(f"[OpenUni] memory released on request ({released} model(s) moved to the CPU)")


def make_room(memory_required, device) -> None:
    """ComfyUI needs `memory_required` bytes on `device` for another model: offload ours if it is in the way."""
    if device is None or torch.device(device).type == "cpu":
        return
    for model in live_models():
        free = comfy.free_bytes(device)
        if free is not None and free >= memory_required:
            return
        if _uses(model, device):
            model.placement.offload_all()
            comfy.soft_empty_cache()
            comfy.info("[OpenUni] moved to the CPU to make room for another model")


def install() -> bool:
    return comfy.install_memory_hooks(release_all, make_room)
