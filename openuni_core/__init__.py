"""openuni_core: the OpenUni engine (InternVL3 + meta queries + connector + SANA + DC-AE).

Pure torch/transformers/diffusers; never imports ComfyUI. Hosts pass progress/interrupt hooks in.
"""

from .errors import MissingModelFilesError, OpenUniError
from .variants import VARIANTS, Variant

__all__ = ["OpenUniError", "MissingModelFilesError", "VARIANTS", "Variant", "load_openuni", "OpenUniModel"]


def __getattr__(name):  # heavy imports (transformers, diffusers) only when the engine is used
    if name in ("load_openuni", "OpenUniModel"):
        from . import model

        return getattr(model, name)
    raise AttributeError(name)
