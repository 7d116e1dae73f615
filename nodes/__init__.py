"""ComfyUI nodes for OpenUni: thin adapters over `openuni_core` (classic NODE_CLASS_MAPPINGS API).

Importing this package registers the model folders with ComfyUI's `folder_paths` and hooks ComfyUI's
memory management (both no-ops when ComfyUI is not there); no weights are read and nothing is downloaded.
"""

from . import model_cache, model_files
from .caption import OpenUniCaption
from .chat import OpenUniChat, OpenUniPromptEnhance
from .encode import OpenUniImageEditEncode, OpenUniTextEncode
from .loader import OpenUniModelLoader
from .sample import OpenUniSampler
from .vae import OpenUniVAEDecode, OpenUniVAEEncode

NODE_CLASS_MAPPINGS = {
    "OpenUniModelLoader": OpenUniModelLoader,
    "OpenUniTextEncode": OpenUniTextEncode,
    "OpenUniImageEditEncode": OpenUniImageEditEncode,
    "OpenUniSampler": OpenUniSampler,
    "OpenUniVAEDecode": OpenUniVAEDecode,
    "OpenUniVAEEncode": OpenUniVAEEncode,
    "OpenUniCaption": OpenUniCaption,
    "OpenUniChat": OpenUniChat,
    "OpenUniPromptEnhance": OpenUniPromptEnhance,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "OpenUniModelLoader": "OpenUni Model Loader",
    "OpenUniTextEncode": "OpenUni Text Encode",
    "OpenUniImageEditEncode": "OpenUni Image Edit Encode (experimental)",
    "OpenUniSampler": "OpenUni Sampler",
    "OpenUniVAEDecode": "OpenUni VAE Decode",
    "OpenUniVAEEncode": "OpenUni VAE Encode",
    "OpenUniCaption": "OpenUni Caption",
    "OpenUniChat": "OpenUni Chat",
    "OpenUniPromptEnhance": "OpenUni Prompt Enhance",
}

model_files.register_folders()
model_cache.install()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
