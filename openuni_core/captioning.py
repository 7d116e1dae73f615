"""Understanding: caption / answer questions about an image in InternVL3's own chat format.

Generation is transformers' own `generate` on the native InternVL model; a stopping criterion
carries our progress and interrupt hooks into its loop.
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from .conditioning import check_user_text
from .errors import OpenUniError
from .images import caption_pixel_values, tile_count, to_pil
from .internvl import IM_END, IM_START, IMG_CONTEXT, IMG_END, IMG_START, TOKENS_PER_TILE
from .options import (DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_TILES, DEFAULT_QUESTION, GREEDY_BELOW, MAX_NEW_TOKENS,
                      MAX_TEMPERATURE, MAX_TILES)

SYSTEM_MESSAGE = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


def chat_query(question: str, num_tiles: int) -> str:
    image = f"{IMG_START}{IMG_CONTEXT * (TOKENS_PER_TILE * num_tiles)}{IMG_END}"
    return (f"{IM_START}system\n{SYSTEM_MESSAGE}{IM_END}\n"
            f"{IM_START}user\n{image}\n{question}{IM_END}\n{IM_START}assistant\n")


class _ProgressAndInterrupt(StoppingCriteria):
    """transformers' generate offers no per-token callback; a stopping criterion is called after every token, so this
    one carries the host's progress and interrupt hooks into the loop. It never stops generation itself."""

    def __init__(self, prompt_len: int, total: int, progress, interrupt):
        self.prompt_len, self.total, self.progress, self.interrupt = prompt_len, total, progress, interrupt

    def __call__(self, input_ids, scores, **kwargs):
        if self.interrupt is not None:
            self.interrupt()
        if self.progress is not None:
            self.progress(min(input_ids.shape[1] - self.prompt_len, self.total), self.total)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def check_settings(*, max_tiles: int, max_new_tokens: int, temperature: float) -> None:
    """Raise OpenUniError, naming the value and the fix, for a captioning setting outside options.py's limits."""
    if not isinstance(max_tiles, int) or not 1 <= max_tiles <= MAX_TILES:
        raise OpenUniError(f"max_tiles {max_tiles} is not allowed: use 1 to {MAX_TILES} (InternVL3 uses up to 12).")
    if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise OpenUniError(f"max_new_tokens {max_new_tokens} is not allowed: use 1 to {MAX_NEW_TOKENS}.")
    if (not isinstance(temperature, (int, float)) or temperature != temperature
            or not 0 <= temperature <= MAX_TEMPERATURE):
        raise OpenUniError(f"temperature {temperature} is not allowed: use 0 (greedy) to {MAX_TEMPERATURE:g}.")


def chat_prompt_ids(tokenizer, context: int, question: str | None, width: int, height: int, max_tiles: int,
                    use_thumbnail: bool = True) -> tuple[list[int], int]:
    """The chat prompt's token ids for a question about a width×height image, and its number of 448² tiles.

    Needs only the tokenizer and the LLM's context length (`InternVLInfo.context`), so a host can check a question
    before loading the model; `caption` calls it too. An empty question asks options.DEFAULT_QUESTION. Raises
    OpenUniError for text that is not text or spells a control token, and when the prompt leaves no room for an
    answer in the context; the message counts the question's own tokens apart from the image's and the template's."""
    question = check_user_text(tokenizer, question or "", "question").strip() or DEFAULT_QUESTION
    tiles = tile_count(width, height, max_tiles, use_thumbnail)
    prompt_ids = tokenizer(chat_query(question, tiles), add_special_tokens=True, verbose=False).input_ids
    if len(prompt_ids) >= context:
        own = len(tokenizer(question, add_special_tokens=False, verbose=False).input_ids)
        image = TOKENS_PER_TILE * tiles
        template = len(prompt_ids) - own - image
        room = context - 1 - image - template  # at least one token must be left for the answer
        if room < 1:
            raise OpenUniError(
                f"The image takes {tiles} tiles ({image} tokens) and the chat template {template} tokens, which leaves "
                f"no room in this model's {context}-token context for the question ({own} tokens) and an answer; "
                f"lower max_tiles (each tile is {TOKENS_PER_TILE} tokens).")
        raise OpenUniError(
            f"The question is {own} tokens long; with {tiles} image tiles ({image} tokens) and {template} tokens of "
            f"chat template, this model takes at most {room} tokens for it ({context}-token context). Shorten the "
            "question or lower max_tiles.")
    return prompt_ids, tiles


@torch.no_grad()
def caption(mllm, tokenizer, image, *, question: str = DEFAULT_QUESTION, max_tiles: int = DEFAULT_MAX_TILES,
            max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = 0.0, seed: int = 0,
            use_thumbnail: bool = True, progress: Callable[[int, int], None] | None = None,
            interrupt: Callable[[], None] | None = None) -> str:
    """InternVL3 chat about one image → the answer text (stripped, special tokens removed).

    image: a [H,W,C] tensor in 0..1, a PIL image or a path. temperature 0 (below options.GREEDY_BELOW) decodes
    greedily; otherwise it samples with `seed`. progress(tokens, max_new_tokens) after each token; interrupt()
    raises to stop. Raises OpenUniError for bad settings, text or images, and when the prompt does not fit the
    context (checked before any image work).
    """
    check_settings(max_tiles=max_tiles, max_new_tokens=max_new_tokens, temperature=temperature)
    pil = to_pil(image)
    context = int(mllm.config.text_config.max_position_embeddings)
    prompt_ids, tiles = chat_prompt_ids(tokenizer, context, question, pil.width, pil.height, max_tiles, use_thumbnail)
    max_new_tokens = min(max_new_tokens, context - len(prompt_ids))
    device = mllm.device
    pixel_values = caption_pixel_values(pil, max_tiles, use_thumbnail).to(device=device, dtype=mllm.dtype)
    if pixel_values.shape[0] != tiles:
        raise OpenUniError(f"Internal: {pixel_values.shape[0]} tiles prepared for {tiles} planned.")
    ids = torch.tensor([prompt_ids], device=device)
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else im_end
    sample = temperature >= GREEDY_BELOW
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample,
                              # InternVL's chat defaults, explicit: transformers 4.x reads None as "off", 5.x as 50
                              temperature=temperature if sample else None, top_p=1.0, top_k=50,
                              eos_token_id=im_end, pad_token_id=pad)
    hooks = StoppingCriteriaList([_ProgressAndInterrupt(ids.shape[1], max_new_tokens, progress, interrupt)])
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(seed) % (2**63))
        out = mllm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel_values,
                            generation_config=config, stopping_criteria=hooks)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
