"""The engine stays an engine: nothing in openuni_core/ imports the benchmarks or ComfyUI's modules.

ComfyUI imports openuni_core through the node pack, and openuni_core also runs on its own (CLI, demo, tests);
the benchmarks (benchmarks/) use the engine, never the other way round. Read statically with `ast`, so an
import inside a function, an `importlib.import_module("comfy...")` and a relative import that climbs out of the
package are caught too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"benchmarks", "comfy", "folder_paths", "nodes", "server", "execution"}


def forbidden_imports(source: str) -> list[str]:
    """'line N: module' for each import in `source` of a FORBIDDEN top-level module, or from outside the package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:  # a module of openuni_core itself
                continue
            if node.level > 1:  # `from .. import x`: the node pack or whatever holds the engine
                found.append(f"line {node.lineno}: {'.' * node.level}{node.module or ''}")
                continue
            names = [node.module]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            names = [node.args[0].value]
        else:
            continue
        found += [f"line {node.lineno}: {name}" for name in names if name.split(".")[0] in FORBIDDEN]
    return found


def test_the_engine_imports_neither_the_benchmarks_nor_comfyui():
    files = sorted((ROOT / "openuni_core").rglob("*.py"))
    assert ROOT / "openuni_core" / "model.py" in files
    found = {str(f.relative_to(ROOT)): forbidden_imports(f.read_text(encoding="utf-8")) for f in files}
    assert {f: lines for f, lines in found.items() if lines} == {}


@pytest.mark.parametrize("source", [
    "import comfy.model_management", "from comfy import model_management", "import folder_paths", "import nodes",
    "from server import PromptServer", "import execution", "import benchmarks", "from benchmarks.common import gb",
    "import torch, comfy.utils as cu", "def f():\n    import comfy\n", "from .. import nodes", "from ..benchmarks import run",
    "import importlib\nimportlib.import_module('comfy.utils')", "__import__('folder_paths')",
])
def test_the_guard_catches_each_kind_of_import(source):
    assert forbidden_imports(source), source


@pytest.mark.parametrize("source", [
    "from .model import load_openuni", "from . import vae", "import torch", "from diffusers import AutoencoderDC",
    "import nodes_helper", "from serverless import x", "import importlib\nimportlib.import_module('transformers')",
])
def test_the_guard_lets_the_engines_own_imports_through(source):
    assert forbidden_imports(source) == [], source
