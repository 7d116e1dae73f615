"""Encode nodes: prompt or image + instruction → OpenUni conditioning (ComfyUI CONDITIONING layout)."""

from __future__ import annotations

import torch

from .conditioning import to_comfy
from .loader import CATEGORY, MODEL_TYPE
from ..openuni_core.conditioning import DEFAULT_EDIT_NEGATIVE
from ..openuni_core.errors import OpenUniError
from ..openuni_core.images import MAX_PIXELS

MODEL_TOOLTIP = "The OpenUni model from OpenUni Model Loader."
OUTPUT_TOOLTIPS = ("Conditioning for the sampler's positive input.", "Conditioning for the sampler's negative input.")


def require_model(model):
    if not all(hasattr(model, a) for a in ("encode_prompt", "sample", "decode", "model_id")):
        raise OpenUniError(f"The model input is a {type(model).__name__}, not an OpenUni model; connect "
                           "OpenUni Model Loader.")
    return model


def image_batch(image, what: str = "image") -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] < 1:
        raise OpenUniError(f"The {what} input must be a ComfyUI IMAGE batch [batch, height, width, channels], got "
                           f"{list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}.")
    return image


def text_input(value, what: str) -> str:
    if not isinstance(value, str):
        raise OpenUniError(f"The {what} input must be text, got {type(value).__name__}; connect a STRING.")
    return value


def image_list(image, what: str = "image"):
    """A ComfyUI IMAGE batch [B,H,W,C], or what a node hands over as a Python list (images of different sizes
    cannot share one batch tensor): a list of [H,W,C] or [B,H,W,C] tensors, flattened to [H,W,C] images."""
    if not isinstance(image, (list, tuple)):
        return image_batch(image, what)
    images = []
    for item in image:
        if isinstance(item, torch.Tensor) and item.ndim in (3, 4):
            images.extend(item if item.ndim == 4 else [item])
        else:
            raise OpenUniError(f"The {what} input is a list holding "
                               f"{list(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__}; "
                               "each entry must be an image [height, width, channels] or a batch of them.")
    if not images:
        raise OpenUniError(f"The {what} input is an empty list; connect at least one image.")
    return images


def refuse_huge(images, what: str = "image") -> None:
    """The engine's pixel limit, checked on the shapes before it converts (and so copies) any image."""
    for im in images:
        h, w = int(im.shape[-3]), int(im.shape[-2])
        if h * w > MAX_PIXELS:
            raise OpenUniError(f"The {what} is {w}×{h}; images above {MAX_PIXELS // 1_000_000} MP are refused. "
                               "Downscale it first (e.g. with Upscale Image By).")


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
                                  "tooltip": "What to draw. Sent to InternVL3 as 'Generate an image: <prompt>'."}),
            "negative_prompt": ("STRING", {
                "multiline": True, "dynamicPrompts": True, "default": "",
                "tooltip": "What to steer away from. Empty uses the model's own default ('Generate an image.'), "
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
                                       "tooltip": "What to change, e.g. 'make it winter'."}),
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
        negative = model.encode_edit(images, negative_instruction.strip() or DEFAULT_EDIT_NEGATIVE)
        return to_comfy(positive, model), to_comfy(negative, model)
