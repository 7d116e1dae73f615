"""What the understanding nodes (Caption, Chat, Prompt Enhance) share: their generation widgets, and running the
engine with ComfyUI's progress bar and Stop button. Each returns a list of answers, shown on the node by
web/openuni.js."""

from __future__ import annotations

from . import comfy_services as comfy
from .common import CATEGORY, MODEL_TOOLTIP, MODEL_TYPE, image_list, refuse_huge
from ..openuni_core.options import (DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_TILES, MAX_NEW_TOKENS, MAX_TEMPERATURE,
                                    MAX_TILES, SEED_MAX)

PROGRESS_INTERVAL = 0.1  # seconds between progress-bar messages while tokens stream
OUTPUT_TOOLTIP = "One answer per input image (a list: nodes downstream run once per answer)."


def generation_inputs(max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict:
    """max_tiles, max_new_tokens, temperature and seed, with the engine's limits (options.py)."""
    return {
        "max_tiles": ("INT", {"default": DEFAULT_MAX_TILES, "min": 1, "max": MAX_TILES,
                              "tooltip": "InternVL splits the image into up to this many 448×448 tiles (plus a "
                                         "thumbnail); more tiles read finer detail but take longer."}),
        "max_new_tokens": ("INT", {"default": max_new_tokens, "min": 1, "max": MAX_NEW_TOKENS,
                                   "tooltip": "Longest answer, in tokens."}),
        "temperature": ("FLOAT", {"default": 0.0, "min": 0.0, "max": MAX_TEMPERATURE, "step": 0.05,
                                  "tooltip": "0 = greedy (same answer every time, and a repeated question about an "
                                             "unchanged image is answered from a cache); higher = more varied."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": False,
                         "tooltip": "Seed for sampling when temperature is above 0."}),
    }


class AnswerNode:
    """The three nodes' shared shape: a list of answers (STRING), shown on the node, so an output node."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    OUTPUT_IS_LIST = (True,)
    OUTPUT_NODE = True


def answer_inputs(texts: dict, *, optional: dict, image: tuple | None = None,
                  max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict:
    """INPUT_TYPES: the model, a required `image` if given, the node's text inputs, the generation widgets, then the
    optional inputs."""
    required = {"model": (MODEL_TYPE, {"tooltip": MODEL_TOOLTIP}), **({"image": image} if image else {})}
    return {"required": {**required, **texts, **generation_inputs(max_new_tokens)}, "optional": optional}


def images_or_none(image):
    """An optional IMAGE input as the engine's list of images (None when not connected), checked on its shapes."""
    if image is None:
        return None
    images = image_list(image)
    refuse_huge(images)
    return images


def run(task, images, max_new_tokens: int, **kwargs) -> dict:
    """task(progress=, interrupt=, max_new_tokens=, **kwargs) → answers, as the node's UI text and list output.
    images: the node's images (None: a text-only turn), for the progress bar's first estimate of the work."""
    answers = 1 if images is None else len(images)
    progress = comfy.Progress(answers * max_new_tokens, interval=PROGRESS_INTERVAL)
    texts = task(max_new_tokens=max_new_tokens, progress=progress.update, interrupt=comfy.interrupt_hook(), **kwargs)
    progress.done()
    return {"ui": {"text": texts}, "result": (texts,)}
