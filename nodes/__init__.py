"""ComfyUI nodes for OpenUni: thin adapters over `openuni_core` (classic NODE_CLASS_MAPPINGS API).

Importing this package registers the model folders with ComfyUI's `folder_paths` (a no-op when ComfyUI is not
there); no weights are read and nothing is downloaded. The loader's MODEL and VAE outputs (nodes/native) are
built on ComfyUI's own model classes and memory management when the loader runs.
"""

from . import model_files
from .caption import OpenUniCaption
from .chat import OpenUniChat, OpenUniPromptEnhance
from .encode import OpenUniImageEditEncode, OpenUniTextEncode
from .loader import OpenUniModelLoader
from .native_nodes import OpenUniDPMSolverSampler, OpenUniEmptyLatent, OpenUniLoraLoader, OpenUniScheduler
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
    "OpenUniEmptyLatent": OpenUniEmptyLatent,
    "OpenUniScheduler": OpenUniScheduler,
    "OpenUniDPMSolverSampler": OpenUniDPMSolverSampler,
    "OpenUniLoraLoader": OpenUniLoraLoader,
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
    "OpenUniEmptyLatent": "OpenUni Empty Latent",
    "OpenUniScheduler": "OpenUni Scheduler",
    "OpenUniDPMSolverSampler": "OpenUni DPM-Solver++ (sampler)",
    "OpenUniLoraLoader": "OpenUni LoRA Loader (model only)",
    "OpenUniChat": "OpenUni Chat",
    "OpenUniPromptEnhance": "OpenUni Prompt Enhance",
}

model_files.register_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
