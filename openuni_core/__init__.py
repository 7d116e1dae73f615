"""openuni_core: the OpenUni engine (InternVL3 + meta queries + connector + SANA + DC-AE).

Pure torch/transformers/diffusers; never imports ComfyUI. Hosts pass progress/interrupt hooks in.

    from openuni_core import load_openuni
    model = load_openuni(checkpoint, mllm_dir, sana_dir, vae_dir, dtype="bf16", device="cuda")
"""

from .errors import MissingModelFilesError, OpenUniError, OpenUniOutOfMemoryError
from .variants import VARIANTS, Variant

__all__ = ["OpenUniError", "MissingModelFilesError", "OpenUniOutOfMemoryError", "VARIANTS", "Variant",
           "load_openuni", "inspect_openuni", "OpenUniModel"]


def __getattr__(name):  # heavy imports (transformers, diffusers) only when the engine is used
    if name in ("load_openuni", "inspect_openuni"):
        from . import loading

        return getattr(loading, name)
    if name == "OpenUniModel":
        from .model import OpenUniModel

        return OpenUniModel
    raise AttributeError(name)
