"""Prompts (and images) → query conditioning, with a cache so a repeated text costs no LLM forward.

The math (chat template, meta queries, connector) is in conditioning.py; this class prepares the user's
text, keeps the last CACHE_SIZE results on the CPU, and runs what is not cached in one batch on the
MLLM's device (the placement decides how the weights get there).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable

import torch

from . import conditioning
from .conditioning import QueryConditioning
from .errors import OpenUniError
from .images import edit_pixel_values, to_pil
from .internvl import IMG_CONTEXT
from .precision import check_finite, recovering


class PromptEncoder:
    """mllm: the native InternVL model; bridge: meta queries + connector + projector; placement: its `use` runs
    the MLLM on its device. max_prompt_tokens: the LLM's context minus the queries."""

    CACHE_SIZE = 32

    def __init__(self, mllm, tokenizer, bridge, placement, model_id: str, log: Callable[[str], None] = print):
        self.mllm, self.tokenizer, self.bridge, self.placement, self.model_id = mllm, tokenizer, bridge, placement, model_id
        self.log = log
        self.max_prompt_tokens = int(mllm.config.text_config.max_position_embeddings) - bridge.meta_queries.shape[0]
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    # ----- user text ------------------------------------------------------------------------------------------
    def clean(self, text, what: str = "prompt") -> str:
        """User text without control characters; raises OpenUniError if it is not text or spells a chat-format token."""
        return conditioning.check_user_text(self.tokenizer, text, what)

    def _prompt_texts(self, prompts) -> list[str]:
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise OpenUniError(f"A prompt must be text (or a non-empty list of texts), got {type(prompts).__name__}.")
        return [conditioning.generation_text(self.clean(p)) for p in prompts]

    def _negative_text(self, negative: str | None) -> str:
        return conditioning.negative_text(self.clean(negative or "", "negative prompt"))

    # ----- encoding -------------------------------------------------------------------------------------------
    def _cached(self, keys: list[str], compute: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """Rows for `keys`: cached ones reused, the rest computed in ONE call of compute(indices) on the MLLM (again
        in a wider dtype if its fp16 overflows, see precision.py)."""
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            def run() -> torch.Tensor:
                with self.placement.use("mllm", "encoding the prompt", per_layer=True):
                    out = compute(todo)
                check_finite(out, "mllm", "while encoding the prompt")
                return out

            fresh = recovering(self.placement, "mllm", run, self.log)
            for j, i in enumerate(todo):
                self.cache[keys[i]] = fresh[j:j + 1].cpu()
                while len(self.cache) > self.CACHE_SIZE:
                    self.cache.popitem(last=False)
        for k in keys:
            self.cache.move_to_end(k)
        return torch.cat([self.cache[k] for k in keys])

    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        def compute(idx: list[int]) -> torch.Tensor:
            ids = conditioning.tokenize(self.tokenizer, [texts[i] for i in idx], self.max_prompt_tokens)
            embeds = conditioning.text_token_embeds(self.mllm, ids, self.placement.device("mllm"))
            return conditioning.run_queries(self.mllm, self.bridge.meta_queries, self.bridge, embeds)

        return self._cached([f"text:{t}" for t in texts], compute)

    def encode_prompt(self, prompts: str | list[str]) -> QueryConditioning:
        """Prompt(s) → positive conditioning [B, 256, caption_channels] float32 on the CPU."""
        texts = self._prompt_texts(prompts)
        return QueryConditioning(self._encode_texts(texts), self.model_id, texts)

    def encode_negative(self, negative: str | None = None) -> QueryConditioning:
        """Negative/CFG conditioning [1, 256, C]; empty means the model's default ("Generate an image.")."""
        text = self._negative_text(negative)
        return QueryConditioning(self._encode_texts([text]), self.model_id, [text])

    def encode_pair(self, prompts: str | list[str], negative: str | None = None
                    ) -> tuple[QueryConditioning, QueryConditioning]:
        """Positive and negative together: what is not cached goes through the LLM in ONE padded batch, as the
        reference does with [prompt, CFG prompt]."""
        texts, neg_text = self._prompt_texts(prompts), self._negative_text(negative)
        embeds = self._encode_texts(texts + [neg_text])
        return (QueryConditioning(embeds[:-1], self.model_id, texts),
                QueryConditioning(embeds[-1:], self.model_id, [neg_text]))

    def encode_edit(self, images, instruction: str) -> QueryConditioning:
        """Image(s) + instruction → conditioning [B, 256, C] (EXPERIMENTAL upstream; exact to the reference math).

        images: one image or a list/batch (tensors [H,W,C] in 0..1, PIL images or paths). The instruction's
        length is checked before any image work."""
        instruction = self.clean(instruction, "instruction")
        ids = conditioning.tokenize(self.tokenizer, [conditioning.edit_text(instruction)], self.max_prompt_tokens)
        pils = [to_pil(im) for im in as_image_list(images)]
        keys = [f"edit:{hashlib.sha256(p.tobytes()).hexdigest()}:{p.size}:{instruction}" for p in pils]
        context_id = self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT)

        def compute(idx: list[int]) -> torch.Tensor:
            dev = self.placement.device("mllm")
            pixels = torch.cat([edit_pixel_values(pils[i]) for i in idx]).to(dev, self.mllm.dtype)
            tokens = conditioning.image_tokens(self.mllm, pixels)
            embeds = conditioning.text_token_embeds(self.mllm, ids * len(idx), dev)
            embeds = [conditioning.splice_image_tokens(e, ids[0].to(dev), tokens[j], context_id)
                      for j, e in enumerate(embeds)]
            return conditioning.run_queries(self.mllm, self.bridge.meta_queries, self.bridge, embeds)

        return QueryConditioning(self._cached(keys, compute), self.model_id, [instruction] * len(pils))


def as_image_list(images) -> list:
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    return list(images) if isinstance(images, (list, tuple)) else [images]
