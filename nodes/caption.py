"""OpenUni Caption: InternVL3 chat describes an image or answers a question about it → STRING."""

from __future__ import annotations

from . import comfy_services as comfy
from .common import CATEGORY, MODEL_TOOLTIP, MODEL_TYPE, image_list, refuse_huge, require_model, text_input
from ..openuni_core.options import (DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_TILES, DEFAULT_QUESTION, MAX_NEW_TOKENS,
                                    MAX_TEMPERATURE, MAX_TILES, SEED_MAX)

PROGRESS_INTERVAL = 0.1  # seconds between progress-bar messages while tokens stream


class OpenUniCaption:
    DESCRIPTION = ("Describes an image or answers a question about it with OpenUni's InternVL3 (the 'understanding' "
                   "half). A batch gives one answer per image; the text is shown on the node and can feed a prompt.")
    CATEGORY = CATEGORY
    FUNCTION = "caption"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    OUTPUT_IS_LIST = (True,)
    OUTPUT_TOOLTIPS = ("One answer per input image (a list: nodes downstream run once per answer).",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": MODEL_TOOLTIP}),
            "image": ("IMAGE", {"tooltip": "The image(s) to describe; each image is answered separately."}),
            "question": ("STRING", {"multiline": True, "default": DEFAULT_QUESTION,
                                    "tooltip": "What to ask about the image. Empty asks for a detailed caption."}),
            "max_tiles": ("INT", {"default": DEFAULT_MAX_TILES, "min": 1, "max": MAX_TILES,
                                  "tooltip": "InternVL splits the image into up to this many 448×448 tiles (plus a "
                                             "thumbnail); more tiles read finer detail but take longer."}),
            "max_new_tokens": ("INT", {"default": DEFAULT_MAX_NEW_TOKENS, "min": 1, "max": MAX_NEW_TOKENS,
                                       "tooltip": "Longest answer, in tokens."}),
            "temperature": ("FLOAT", {"default": 0.0, "min": 0.0, "max": MAX_TEMPERATURE, "step": 0.05,
                                      "tooltip": "0 = greedy (same answer every time); higher = more varied."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": False,
                             "tooltip": "Seed for sampling when temperature is above 0."}),
        }}

    def caption(self, model, image, question, max_tiles, max_new_tokens, temperature, seed):
        require_model(model)
        question = text_input(question, "question")
        images = image_list(image)
        refuse_huge(images)
        progress = comfy.Progress(len(images) * max_new_tokens, interval=PROGRESS_INTERVAL)
        interrupt = comfy.interrupt_hook()
        answers = []
        for i, one in enumerate(images):
            offset = i * max_new_tokens
            answers.append(model.caption(one, question, max_tiles=max_tiles, max_new_tokens=max_new_tokens,
                                         temperature=temperature, seed=seed,
                                         progress=lambda n, _total, o=offset: progress.update(o + n),
                                         interrupt=interrupt))
            progress.update(offset + max_new_tokens)
        progress.done()
        return {"ui": {"text": answers}, "result": (answers,)}
