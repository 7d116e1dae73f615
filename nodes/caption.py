"""OpenUni Caption: InternVL3 describes images or answers questions about them → STRING (a list)."""

from __future__ import annotations

from .common import require_model, text_input
from .understanding import AnswerNode, answer_inputs, images_or_none, run
from ..openuni_core.options import CAPTION_PRESETS, CUSTOM_QUESTION, DEFAULT_CAPTION_PRESET, DEFAULT_QUESTION

PRESET_TOOLTIP = ("What to ask. " + "; ".join(f"{name}: '{q}'" for name, q in CAPTION_PRESETS.items() if q)
                  + f"; {CUSTOM_QUESTION}: the question box, one question per line.")


class OpenUniCaption(AnswerNode):
    DESCRIPTION = ("Describes images or answers questions about them with OpenUni's InternVL3 (the 'understanding' "
                   "half): presets for captions, tags and text reading, or your own questions, one per line. All "
                   "answers come from one batched run and each image is read once. The text is shown on the node "
                   "and can feed a prompt.")
    FUNCTION = "caption"
    OUTPUT_TOOLTIPS = ("The answers image by image, and for each image question by question (a list: nodes "
                       "downstream run once per answer).",)

    @classmethod
    def INPUT_TYPES(cls):
        question = ("STRING", {"multiline": True, "default": DEFAULT_QUESTION,
                               "tooltip": f"With the '{CUSTOM_QUESTION}' preset: what to ask, one question per line "
                                          "(each gets its own answer). Empty asks for a detailed caption. Other "
                                          "presets ignore this box."})
        # `preset` is optional and last, so saved workflows from before presets load unchanged (their widget values
        # are positional) and API prompts without it still validate.
        return answer_inputs(
            {"question": question},
            image=("IMAGE", {"tooltip": "The image(s) to describe; each image is answered separately."}),
            optional={"preset": (list(CAPTION_PRESETS), {"default": DEFAULT_CAPTION_PRESET,
                                                         "tooltip": PRESET_TOOLTIP})})

    def caption(self, model, image, question, max_tiles, max_new_tokens, temperature, seed,
                preset=DEFAULT_CAPTION_PRESET):
        require_model(model)
        question = text_input(question, "question")
        images = images_or_none(image)
        return run(lambda **kw: model.captions(images, question, preset=preset, **kw), images, max_new_tokens,
                   max_tiles=max_tiles, temperature=temperature, seed=seed)
