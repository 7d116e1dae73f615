import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A complete tiny OpenUni-B-like set written to disk in every real format."""
    from openuni_core.tiny import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("tiny"), "tiny-B", seed=0)


@pytest.fixture(scope="session")
def tiny_l(tmp_path_factory):
    from openuni_core.tiny import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("tinyL"), "tiny-L", seed=5)


@pytest.fixture(scope="session")
def model(tiny):
    from openuni_core.loading import load_openuni

    return load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A real ComfyUI in this process with the pack loaded (tests/comfy_inprocess.py); skips without ComfyUI."""
    sys.path.insert(0, str(ROOT / "tests"))
    from comfy_inprocess import comfy_session

    return comfy_session(tmp_path_factory)


@pytest.fixture(scope="session")
def reference_vae(tiny):
    """diffusers' own AutoencoderDC loaded from the tiny DC-AE folder (not through the engine's loader)."""
    from diffusers import AutoencoderDC

    return AutoencoderDC.from_pretrained(tiny.vae).eval()
