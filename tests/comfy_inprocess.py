"""A REAL ComfyUI imported into the test process, for the pack's ComfyUI-native parts (MODEL, VAE, samplers, LoRA,
memory): tests/test_native_*.py. They skip only when ComfyUI is absent (COMFYUI_DIR unset, or ComfyUI or its
requirements not importable in this Python); run them in ComfyUI's Python:

    COMFYUI_DIR=/path/to/ComfyUI /path/to/comfy/venv/bin/python -m pytest -q tests/test_native_*.py

ComfyUI goes first on sys.path (this repo's `nodes` package would shadow ComfyUI's nodes.py), runs with
--cpu when there is no GPU (importing comfy.model_management asks CUDA for a device otherwise), and every
folder ComfyUI writes to (models, user, temp, output) is a throw-away one. The pack is loaded the way ComfyUI
loads custom nodes (tests/comfy_pack.py), with the tiny models in its models/openuni/.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from comfy_pack import TINY_NODE_INPUTS, load_pack, place_tiny_models  # noqa: E402

PACK = "openuni_native_pack"


def comfy_dir() -> Path | None:
    d = os.environ.get("COMFYUI_DIR")
    return Path(d) if d and (Path(d) / "comfy" / "model_management.py").is_file() else None


def _import_comfyui(cdir: Path):
    if str(cdir) in sys.path:
        sys.path.remove(str(cdir))
    sys.path.insert(0, str(cdir))
    shadow = sys.modules.get("nodes")
    if shadow is not None and not hasattr(shadow, "KSampler"):  # this repo's nodes package, not ComfyUI's
        del sys.modules["nodes"]
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True
    importlib.import_module("utils.install_util")  # as main.py does first: keeps ComfyUI's `utils` the package
    import comfy.model_management  # noqa: F401
    import nodes

    return nodes


class Comfy:
    """The imported ComfyUI, its throw-away folders, and the pack inside it."""

    def __init__(self, base: Path, tiny):
        self.base, self.tiny = base, tiny
        self.nodes = _import_comfyui(comfy_dir())
        import folder_paths

        self.folder_paths = folder_paths
        folder_paths.models_dir = str(base / "models")
        for kind in ("user", "temp", "output", "input"):
            (base / kind).mkdir(parents=True, exist_ok=True)
            getattr(folder_paths, f"set_{kind}_directory")(str(base / kind))
        (base / "models" / "loras").mkdir(parents=True, exist_ok=True)
        folder_paths.add_model_folder_path("loras", str(base / "models" / "loras"), is_default=True)
        place_tiny_models(tiny, base / "models")
        self.pack = load_pack(PACK)
        self.nodes.NODE_CLASS_MAPPINGS.update(self.pack.NODE_CLASS_MAPPINGS)
        if "SamplerCustomAdvanced" not in self.nodes.NODE_CLASS_MAPPINGS:  # comfy_extras: v3 nodes, once
            asyncio.run(self.nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))

    def module(self, name: str):
        """A module of the loaded pack, e.g. "nodes.native.parts"."""
        return importlib.import_module(f"{PACK}.{name}")

    def call(self, name: str, **inputs):
        """A node the way ComfyUI's executor runs it: a fresh instance, FUNCTION(**inputs), in inference mode."""
        cls = self.nodes.NODE_CLASS_MAPPINGS[name]
        with torch.inference_mode():
            out = getattr(cls(), cls.FUNCTION)(**inputs)
        return getattr(out, "result", out)

    def load(self, **overrides):
        """OpenUni Model Loader on the tiny models → (engine, MODEL, VAE)."""
        return self.call("OpenUniModelLoader", **{**TINY_NODE_INPUTS, **overrides})

    def executor(self):
        """ComfyUI's own prompt executor (what the server's prompt worker runs), with a server stand-in that records
        what would go to the UI."""
        import execution

        return execution.PromptExecutor(RecordingServer(), cache_type=execution.CacheType.CLASSIC)

    def run(self, executor, prompt: dict, outputs: list[str]) -> list[dict]:
        """Execute an API-format prompt; returns the execution_error messages (empty on success)."""
        executor.execute(prompt, "prompt", {}, outputs)
        return [d for event, d in executor.status_messages if event == "execution_error"]

    def loaded_models(self) -> list:
        import comfy.model_management as mm

        return mm.loaded_models()


class RecordingServer:
    """The attributes PromptExecutor uses of ComfyUI's PromptServer; messages are recorded."""

    client_id = None
    last_node_id = None
    last_prompt_id = None
    sockets_metadata: dict = {}

    def __init__(self):
        self.sent = []

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data))


def comfy_session(tmp_path_factory) -> Comfy:
    """The session's ComfyUI (skips when ComfyUI is absent)."""
    if comfy_dir() is None:
        pytest.skip("set COMFYUI_DIR to a ComfyUI checkout (and run in its Python) for the native-node tests")
    try:
        _import_comfyui(comfy_dir())
    except ImportError as e:
        pytest.skip(f"ComfyUI at {comfy_dir()} is not importable in this Python ({e}); use ComfyUI's Python")
    from openuni_core.tiny import write_tiny_models

    tiny = write_tiny_models(tmp_path_factory.mktemp("native_tiny"), "tiny-B", seed=0)
    return Comfy(tmp_path_factory.mktemp("native_comfy"), tiny)
