"""openuni_core: the OpenUni engine (InternVL3 + meta queries + connector + SANA + DC-AE).

Pure torch/transformers/diffusers; never imports ComfyUI. Hosts pass progress/interrupt hooks in.

    from openuni_core import load_openuni
    model = load_openuni(checkpoint, mllm_dir, sana_dir, vae_dir, dtype="bf16", device="cuda")
"""

__all__ = ["OpenUniError", "MissingModelFilesError", "OpenUniOutOfMemoryError", "VARIANTS", "Variant",
           "load_openuni", "inspect_openuni", "OpenUniModel"]

_HOME = {"OpenUniError": "errors", "MissingModelFilesError": "errors", "OpenUniOutOfMemoryError": "errors",
         "VARIANTS": "variants", "Variant": "variants", "load_openuni": "loading", "inspect_openuni": "loading",
         "OpenUniModel": "model"}


def __getattr__(name):
    # Every name is imported on first use: `python -m openuni_core --help` starts without torch, and a Ctrl-C
    # while torch imports lands inside the command line's own handler (cli.main), not in a bare traceback.
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(name)
