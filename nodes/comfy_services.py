"""The few ComfyUI services the nodes use, each optional so the pack imports (and is tested) without ComfyUI.

Everything ComfyUI-specific the nodes touch goes through here: `folder_paths` (model folders),
`comfy.model_management` (devices, memory, interrupt) and `comfy.utils.ProgressBar`. Modules are looked
up at call time, so tests can put fakes into `sys.modules` and take them out again.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time

log = logging.getLogger("OpenUni")


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def folder_paths():
    return _module("folder_paths")


def model_management():
    return _module("comfy.model_management")


def info(message: str) -> None:
    """Core log lines (already prefixed "[OpenUni]") go to ComfyUI's console (its root logger)."""
    log.info(message)


# ----- devices, memory ----------------------------------------------------------------------------------------

def torch_device():
    """The device ComfyUI computes on (honours --cpu, --cuda-device, ...); None = let the core choose."""
    mm = model_management()
    if mm is None:
        return None
    try:
        return mm.get_torch_device()
    except Exception:  # a ComfyUI without a usable device API: fall back to the core's choice
        return None


_ours = threading.local()  # set while OpenUni itself asks ComfyUI for room, so it doesn't evict itself


@contextlib.contextmanager
def _own_request():
    depth = getattr(_ours, "depth", 0)
    _ours.depth = depth + 1
    try:
        yield
    finally:
        _ours.depth = depth


def free_memory(num_bytes: int, device) -> None:
    """Ask ComfyUI to unload its own models until `num_bytes` fit on `device` (no-op without ComfyUI)."""
    mm = model_management()
    if mm is None or device is None or num_bytes <= 0:
        return
    with _own_request():
        mm.free_memory(int(num_bytes), device)


def soft_empty_cache() -> None:
    mm = model_management()
    if mm is not None:
        mm.soft_empty_cache()


def interrupt_hook():
    """ComfyUI's Stop button: raises its InterruptProcessingException when pressed (checked between steps)."""
    mm = model_management()
    return getattr(mm, "throw_exception_if_processing_interrupted", None) if mm is not None else None


UNLOAD_ALL = 1e29  # ComfyUI's unload_all_models asks free_memory for 1e30 bytes


def install_memory_hooks(on_unload_all, on_need_room) -> bool:
    """Hear ComfyUI's "Unload models" / "Free memory" requests and its own requests for room.

    ComfyUI has no callback registry for this. Its server's /free endpoint (both buttons in the UI)
    makes the prompt worker call `comfy.model_management.unload_all_models()`, which calls
    `free_memory(1e30, device)`; every model load calls `free_memory(bytes, device)` too. We wrap those
    two module functions (keeping the originals' behaviour and signatures, once per process) and
    afterwards tell the nodes, which offload their models. Requests OpenUni makes itself are not
    forwarded back to it.
    """
    mm = model_management()
    if mm is None or getattr(mm, "_openuni_hooked", False):
        return False
    original_free, original_unload = mm.free_memory, mm.unload_all_models

    def free_memory(memory_required, device, *args, **kwargs):
        result = original_free(memory_required, device, *args, **kwargs)
        if not getattr(_ours, "depth", 0) and not getattr(_ours, "unloading", False):
            try:
                if memory_required >= UNLOAD_ALL:
                    on_unload_all()
                else:
                    on_need_room(memory_required, device)
            except Exception:  # never break ComfyUI's own memory management
                log.exception("[OpenUni] releasing memory failed")
        return result

    def unload_all_models(*args, **kwargs):
        _ours.unloading = True  # its inner free_memory(1e30) call is this same request
        try:
            result = original_unload(*args, **kwargs)
        finally:
            _ours.unloading = False
        try:
            on_unload_all()
        except Exception:
            log.exception("[OpenUni] releasing memory failed")
        return result

    for fn, orig in ((free_memory, original_free), (unload_all_models, original_unload)):
        fn.__wrapped__ = orig
        fn.__doc__ = orig.__doc__
    mm.free_memory, mm.unload_all_models = free_memory, unload_all_models
    mm._openuni_hooked = True
    return True


def free_bytes(device) -> int | None:
    mm = model_management()
    if mm is None:
        return None
    try:
        return int(mm.get_free_memory(device))
    except Exception:
        return None


# ----- progress -----------------------------------------------------------------------------------------------

class Progress:
    """ComfyUI's progress bar for the running node; at most one update per `interval` s, the last always sent."""

    def __init__(self, total: int, interval: float = 0.0):
        utils = _module("comfy.utils")
        self.bar = utils.ProgressBar(int(total)) if utils is not None and hasattr(utils, "ProgressBar") else None
        self.total, self.interval, self._last = max(1, int(total)), interval, float("-inf")

    def update(self, value: int, total: int | None = None) -> None:
        if total is not None:
            self.total = max(1, int(total))
        if self.bar is None:
            return
        value = min(int(value), self.total)
        now = time.monotonic()
        if self.interval and value < self.total and now - self._last < self.interval:
            return
        self._last = now
        self.bar.update_absolute(value, self.total)

    def done(self) -> None:
        self.update(self.total)
