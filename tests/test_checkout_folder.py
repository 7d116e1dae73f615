"""The README's test command passes whatever the checkout folder is called.

ComfyUI users clone the pack under any name — the README itself says `comfyui-openuni`. pytest treats the
checkout root as a package (it holds ComfyUI's `__init__.py`) and imports that file before the first test; under
a folder name that is not a Python identifier it gets it as a plain module. The suite must not care.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Enough to show the whole suite's set-up works: the package's entry point, the node pack, the engine.
FEW_TESTS = ["tests/test_house.py", "tests/test_core_imports.py"]


def _source_files() -> list[Path]:
    """The checkout's files (tracked and not ignored) relative to ROOT; without git, the top-level folders."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"], capture_output=True,
                             text=True, check=True).stdout
        return [Path(line) for line in out.splitlines() if line and (ROOT / line).is_file()]
    except (OSError, subprocess.CalledProcessError):
        keep = ("__init__.py", "pyproject.toml", "nodes", "openuni_core", "tests", "web")
        return [p.relative_to(ROOT) for name in keep for p in ([ROOT / name] if (ROOT / name).is_file()
                                                                else (ROOT / name).rglob("*.py"))]


@pytest.mark.parametrize("folder", ["comfyui-openuni", "comfy ui openuni"])
def test_the_suite_runs_in_a_checkout_named_like_the_readme_says(folder, tmp_path):
    """Would catch: `from .nodes import ...` in the root __init__.py without the `if __package__` guard (every
    test then errors with "attempted relative import with no known parent package")."""
    clone = tmp_path / folder
    for rel in _source_files():
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, clone / rel)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FEW_TESTS], cwd=clone,
                         capture_output=True, text=True, env=env, timeout=600)
    tail = "\n".join((run.stdout + run.stderr).splitlines()[-15:])
    assert run.returncode == 0, tail
    assert " passed" in tail and "error" not in tail.lower(), tail
