"""Test helpers: load this repo as a ComfyUI custom-node package, and stand-ins for ComfyUI's modules.

`load_pack` imports the repo root exactly as ComfyUI's `load_custom_node` does (a package spec on
`__init__.py`, registered in sys.modules, relative imports inside). `FakeComfy` puts minimal versions of
`folder_paths`, `comfy.model_management` and `comfy.utils` into `sys.modules`, with the same function
names and call behaviour the nodes rely on, and records what the nodes asked of them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SUPPORTED_PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


TINY_CHECKPOINT = "openuni_tiny_b.safetensors"
# OpenUni Model Loader's inputs for the tiny set placed by place_tiny_models.
TINY_NODE_INPUTS = dict(checkpoint=TINY_CHECKPOINT, mllm="InternVL3-tiny", sana="Sana-tiny_diffusers",
                        vae="dc-ae-tiny-diffusers", precision="fp32", memory="keep parts loaded", attention="auto",
                        download_missing=False)


def place_tiny_models(tiny, models: Path) -> None:
    """The tiny set in ComfyUI's layout: models/openuni/{ckpt, mllm/, sana/, vae/} plus an -hf twin in LLM/."""
    openuni = models / "openuni"
    for sub in ("mllm", "sana", "vae"):
        (openuni / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny.checkpoint_safetensors, openuni / TINY_CHECKPOINT)
    shutil.copy(tiny.checkpoint, openuni / "openuni_tiny_b.pth")
    shutil.copytree(tiny.mllm_original, openuni / "mllm" / "InternVL3-tiny")
    shutil.copytree(tiny.sana, openuni / "sana" / "Sana-tiny_diffusers")
    shutil.copytree(tiny.vae, openuni / "vae" / "dc-ae-tiny-diffusers")
    shutil.copytree(tiny.mllm_hf, models / "LLM" / "OpenGVLab" / "InternVL3-tiny-hf")
    (models / "LLM" / "not-a-vlm").mkdir(parents=True)
    (models / "LLM" / "not-a-vlm" / "config.json").write_text('{"model_type": "llama"}')
    shutil.copytree(tiny.vae, models / "diffusers" / "dc-ae-tiny-diffusers")


def load_pack(name: str = "openuni_pack"):
    """Import the repo as the custom-node package `name` (as ComfyUI does) and return the module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def unload_pack(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


class InterruptProcessingException(Exception):
    pass


class FakeComfy:
    """folder_paths + comfy.model_management + comfy.utils, installed into sys.modules by `install()`."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.free_calls: list[tuple[float, object]] = []
        self.progress: list[tuple[int, int]] = []
        self.interrupt_after: int | None = None  # raise at the n-th interrupt check
        self.interrupt_checks = 0
        self.free_memory_bytes = 1 << 40
        self.modules = {"folder_paths": self._folder_paths(), "comfy": types.ModuleType("comfy"),
                        "comfy.model_management": self._model_management(), "comfy.utils": self._utils()}
        self.modules["comfy"].model_management = self.modules["comfy.model_management"]
        self.modules["comfy"].utils = self.modules["comfy.utils"]
        self._saved: dict = {}

    @property
    def fp(self):
        return self.modules["folder_paths"]

    @property
    def mm(self):
        return self.modules["comfy.model_management"]

    def install(self) -> "FakeComfy":
        for k, m in self.modules.items():
            self._saved[k] = sys.modules.get(k)
            sys.modules[k] = m
        return self

    def uninstall(self) -> None:
        for k, m in self._saved.items():
            if m is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = m

    # -- folder_paths: the parts of ComfyUI's module the pack uses, same semantics --------------------------
    def _folder_paths(self):
        fp = types.ModuleType("folder_paths")
        fp.models_dir = str(self.base / "models")
        fp.supported_pt_extensions = SUPPORTED_PT_EXTENSIONS
        fp.folder_names_and_paths = {
            "checkpoints": ([os.path.join(fp.models_dir, "checkpoints")], SUPPORTED_PT_EXTENSIONS),
            "diffusers": ([os.path.join(fp.models_dir, "diffusers")], ["folder"]),
        }

        def add_model_folder_path(folder_name, full_folder_path, is_default=False):
            if folder_name in fp.folder_names_and_paths:
                paths = fp.folder_names_and_paths[folder_name][0]
                if full_folder_path not in paths:
                    paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)
            else:
                fp.folder_names_and_paths[folder_name] = ([full_folder_path], set())

        def get_folder_paths(folder_name):
            return fp.folder_names_and_paths[folder_name][0][:]

        fp.add_model_folder_path, fp.get_folder_paths = add_model_folder_path, get_folder_paths
        return fp

    # -- comfy.model_management -------------------------------------------------------------------------------
    def _model_management(self):
        mm = types.ModuleType("comfy.model_management")
        fake = self
        mm.InterruptProcessingException = InterruptProcessingException

        def get_torch_device():
            return torch.device("cpu")

        def free_memory(memory_required, device, keep_loaded=[]):
            fake.free_calls.append((memory_required, device))
            return []

        def unload_all_models():
            mm.free_memory(1e30, mm.get_torch_device())  # module-global lookup, as ComfyUI's does

        def get_free_memory(dev=None, torch_free_too=False):
            return fake.free_memory_bytes

        def soft_empty_cache(force=False):
            pass

        def throw_exception_if_processing_interrupted():
            fake.interrupt_checks += 1
            if fake.interrupt_after is not None and fake.interrupt_checks >= fake.interrupt_after:
                fake.interrupt_after = None
                raise InterruptProcessingException()

        for f in (get_torch_device, free_memory, unload_all_models, get_free_memory, soft_empty_cache,
                  throw_exception_if_processing_interrupted):
            setattr(mm, f.__name__, f)
        return mm

    def _utils(self):
        utils = types.ModuleType("comfy.utils")
        fake = self

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.current = total, 0

            def update_absolute(self, value, total=None, preview=None):
                if total is not None:
                    self.total = total
                self.current = min(value, self.total)
                fake.progress.append((self.current, self.total))

            def update(self, value):
                self.update_absolute(self.current + value)

        utils.ProgressBar = ProgressBar
        return utils
