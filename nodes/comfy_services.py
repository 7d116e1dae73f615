"""The few ComfyUI services the nodes use, each optional so the pack imports (and is tested) without ComfyUI.

Everything ComfyUI-specific the nodes touch goes through here: `folder_paths` (model folders),
`comfy.model_management` (devices, memory, interrupt), `comfy.utils.ProgressBar`, and the pack's own
ComfyUI-native parts (nodes/native, which subclass ComfyUI's model classes). Modules are looked up at call
time, so tests can put fakes into `sys.modules` and take them out again.
"""

from __future__ import annotations

import importlib
import logging
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


def free_memory(num_bytes: int, device) -> None:
    """Ask ComfyUI to unload its own models until `num_bytes` fit on `device` (no-op without ComfyUI)."""
    mm = model_management()
    if mm is None or device is None or num_bytes <= 0:
        return
    mm.free_memory(int(num_bytes), device)


def interrupt_hook():
    """ComfyUI's Stop button: raises its InterruptProcessingException when pressed (checked between steps)."""
    mm = model_management()
    return getattr(mm, "throw_exception_if_processing_interrupted", None) if mm is not None else None


def native():
    """nodes.native.parts (OpenUni as ComfyUI MODEL/VAE), or None where ComfyUI's model classes are absent: the
    pack then works through its own nodes only (and its tests fake the few ComfyUI modules it uses)."""
    mm = model_management()
    if mm is None or not hasattr(mm, "load_models_gpu"):
        return None
    try:
        from .native import parts
    except ImportError as e:
        log.warning("[OpenUni] MODEL/VAE outputs unavailable: this ComfyUI lacks %s", e.name or e)
        return None
    return parts


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
