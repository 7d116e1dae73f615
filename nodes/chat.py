"""OpenUni Chat and OpenUni Prompt Enhance: InternVL3 chat, with or without an image, on the model already loaded."""

from __future__ import annotations

from .common import require_model, text_input
from .understanding import OUTPUT_TOOLTIP, AnswerNode, answer_inputs, images_or_none, run
from ..openuni_core.options import DEFAULT_ENHANCE_MAX_NEW_TOKENS, ENHANCE_INSTRUCTION, ENHANCE_WITH_IMAGE


class OpenUniChat(AnswerNode):
    DESCRIPTION = ("Talk to OpenUni's InternVL3: a message, optionally about an image, gets an answer (one per image "
                   "in a batch). Without an image it is a text-only conversation. The answer is shown on the node.")
    FUNCTION = "chat"
    OUTPUT_TOOLTIPS = (OUTPUT_TOOLTIP + " Without an image: one answer.",)

    @classmethod
    def INPUT_TYPES(cls):
        return answer_inputs(
            {"message": ("STRING", {"multiline": True, "default": "",
                                    "tooltip": "What you say to the model (the whole text is one message)."}),
             "system_prompt": ("STRING", {"multiline": True, "default": "",
                                          "tooltip": "Optional system prompt: how the model should behave. Empty "
                                                     "uses InternVL3's own."})},
            optional={"image": ("IMAGE", {"tooltip": "Optional: the image(s) the message is about, tiled as OpenUni "
                                                     "Caption tiles them; each image gets its own answer."})})

    def chat(self, model, message, system_prompt, max_tiles, max_new_tokens, temperature, seed, image=None):
        require_model(model)
        message, system = text_input(message, "message"), text_input(system_prompt, "system_prompt")
        images = images_or_none(image)
        return run(lambda **kw: model.chat(message, images, system=system, **kw), images, max_new_tokens,
                   max_tiles=max_tiles, temperature=temperature, seed=seed)


class OpenUniPromptEnhance(AnswerNode):
    DESCRIPTION = ("Writes a detailed image-generation prompt from a short idea (and optionally a reference image) "
                   "with OpenUni's own InternVL3 — no second model in memory. Wire its output into OpenUni Text "
                   "Encode's prompt. The prompt it wrote is shown on the node.")
    FUNCTION = "enhance"
    RETURN_NAMES = ("prompt",)
    OUTPUT_TOOLTIPS = ("The detailed prompt, one per reference image (a list: nodes downstream run once per "
                       "prompt). If the model writes nothing, the short idea comes back unchanged.",)

    @classmethod
    def INPUT_TYPES(cls):
        return answer_inputs(
            {"prompt": ("STRING", {"multiline": True, "default": "",
                                   "tooltip": f"Your short idea. The model is asked: '{ENHANCE_INSTRUCTION}', "
                                              "followed by 'Idea: ' and this text."})},
            optional={"image": ("IMAGE", {"tooltip": "Optional reference image(s); the instruction then adds "
                                                     f"'{ENHANCE_WITH_IMAGE}'. One prompt per image."})},
            max_new_tokens=DEFAULT_ENHANCE_MAX_NEW_TOKENS)

    def enhance(self, model, prompt, max_tiles, max_new_tokens, temperature, seed, image=None):
        require_model(model)
        prompt = text_input(prompt, "prompt")
        images = images_or_none(image)
        return run(lambda **kw: model.enhance_prompt(prompt, images, **kw), images, max_new_tokens,
                   max_tiles=max_tiles, temperature=temperature, seed=seed)
