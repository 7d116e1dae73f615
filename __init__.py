"""OpenUni for ComfyUI: the custom-node entry point. Registers the nodes and the web extension; nothing else."""

# ComfyUI imports this folder as a package, whatever the folder is called. pytest, too, imports this file
# (the checkout root is a package to it), but under the folder's name only when that name is a valid Python
# identifier; for a clone named e.g. `comfyui-openuni` or `comfy openuni` it imports the file as a plain
# top-level module, where a relative import cannot work. There is nothing to register then.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
