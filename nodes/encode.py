"""Encode nodes: prompt or image + instruction → OpenUni conditioning (ComfyUI CONDITIONING layout)."""

from __future__ import annotations

from .common import CATEGORY, MODEL_TOOLTIP, MODEL_TYPE, image_list, refuse_huge, require_model, text_input
from .conditioning import to_comfy
from ..openuni_core.options import DEFAULT_EDIT_NEGATIVE, DEFAULT_NEGATIVE

OUTPUT_TOOLTIPS = ("Conditioning for the sampler's positive input.", "Conditioning for the sampler's negative input.")


class OpenUniTextEncode:
    DESCRIPTION = ("Turns a prompt into OpenUni conditioning: InternVL3 reads the prompt and 256 learned queries, "
                   "the connector maps them for SANA. Also encodes the negative prompt for classifier-free guidance.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": MODEL_TOOLTIP}),
            "prompt": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "",
                                  "tooltip": "What to draw. Sent to InternVL3 as 'Generate an image: <prompt>'. An "
                                             "empty prompt is refused (it would draw an unguided image)."}),
            "negative_prompt": ("STRING", {
                "multiline": True, "dynamicPrompts": True, "default": "",
                "tooltip": f"What to steer away from. Empty uses the model's own default ('{DEFAULT_NEGATIVE}'), "
                           "which is what OpenUni was trained with."}),
        }}

    def encode(self, model, prompt, negative_prompt=""):
        require_model(model)
        prompt, negative_prompt = text_input(prompt, "prompt"), text_input(negative_prompt, "negative_prompt")
        positive, negative = model.encode_pair(prompt, negative_prompt)  # one LLM batch, as the reference does
        return to_comfy(positive, model), to_comfy(negative, model)


class OpenUniImageEditEncode:
    DESCRIPTION = ("EXPERIMENTAL: conditioning from an image plus an instruction (InternVL3 sees the image as 256 "
                   "tokens before the instruction). Exact to the reference math, but upstream released no image-edit "
                   "checkpoint, so results vary. One conditioning row per image in the batch.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = OUTPUT_TOOLTIPS
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": MODEL_TOOLTIP}),
            "image": ("IMAGE", {"tooltip": "The image to edit (EXPERIMENTAL). Resized to 448×448 for InternVL3; "
                                           "a batch gives one conditioning row per image."}),
            "instruction": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "",
                                       "tooltip": "What to change, e.g. 'make it winter'. Must not be empty."}),
            "negative_instruction": ("STRING", {
                "multiline": True, "default": DEFAULT_EDIT_NEGATIVE,
                "tooltip": f"Instruction for the guidance branch, with the same image. Empty uses the reference "
                           f"default '{DEFAULT_EDIT_NEGATIVE}'."}),
        }}

    def encode(self, model, image, instruction, negative_instruction=DEFAULT_EDIT_NEGATIVE):
        require_model(model)
        instruction = text_input(instruction, "instruction")
        negative_instruction = text_input(negative_instruction, "negative_instruction")
        images = image_list(image)
        refuse_huge(images)
        positive = model.encode_edit(images, instruction)
        negative = model.encode_edit(images, negative_instruction.strip() or DEFAULT_EDIT_NEGATIVE,
                                     "negative instruction")
        return to_comfy(positive, model), to_comfy(negative, model)
