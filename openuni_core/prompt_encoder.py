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
from .variants import NUM_QUERIES


class PromptRules:
    """What the engine asks of user text, needing only the tokenizer and the LLM's context length (no weights):
    the command line checks a run's texts with it before loading any model, and PromptEncoder applies the same
    object, so both refuse the same texts with the same words.

    Refused with OpenUniError: values that are not text, an empty prompt or instruction (there is nothing to draw:
    an empty prompt reads almost like the guidance text, so the image would follow no one), the model's chat-format
    control tokens, and text longer than the context leaves room for. An empty NEGATIVE is fine: it means the
    model's default. Each method returns the text as the MLLM will read it."""

    def __init__(self, tokenizer, context: int):
        self.tokenizer, self.context = tokenizer, int(context)
        self.max_tokens = self.context - NUM_QUERIES  # the prompt and its template; the queries follow it

    def clean(self, text, what: str = "prompt") -> str:
        """User text without control characters; raises OpenUniError if it is not text or spells a chat-format token."""
        return conditioning.check_user_text(self.tokenizer, text, what)

    def prompts(self, prompts) -> list[str]:
        """Prompt(s) → the texts the MLLM reads ("Generate an image: …")."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise OpenUniError(f"A prompt must be text (or a non-empty list of texts), got {type(prompts).__name__}.")
        return [self._fits(conditioning.generation_text(p), p, "prompt")
                for p in (self._not_empty(self.clean(p), "prompt") for p in prompts)]

    def negative(self, negative: str | None, what: str = "negative prompt") -> str:
        """Negative text → what the MLLM reads; empty means the model's default (options.DEFAULT_NEGATIVE)."""
        text = self.clean(negative or "", what)
        return self._fits(conditioning.negative_text(text), text, what)

    def instruction(self, instruction, what: str = "instruction") -> tuple[str, list[torch.Tensor]]:
        """An edit instruction → (the cleaned instruction, its token ids with the image's slots), checked before
        any image work."""
        text = self._not_empty(self.clean(instruction, what), what).strip()
        templated = self._fits(conditioning.edit_text(text), text, what)
        return text, conditioning.tokenize(self.tokenizer, [templated])

    @staticmethod
    def _not_empty(text: str, what: str) -> str:
        if not text.strip():
            raise OpenUniError(f"The {what} is empty; write what to draw (if it comes from another node, such as a "
                               "caption, that node gave empty text).")
        return text

    def _fits(self, templated: str, user_text: str, what: str) -> str:
        n = len(conditioning.tokenize(self.tokenizer, [templated])[0])
        if n > self.max_tokens:
            # Counted and limited in the user's own tokens: the template's are not theirs to shorten.
            own = len(self.tokenizer(user_text.strip(), add_special_tokens=False, verbose=False).input_ids)
            fixed = n - own
            raise OpenUniError(
                f"The {what} is {own} tokens long; this model takes at most {self.max_tokens - fixed} tokens for it "
                f"(its {self.context}-token context, less {NUM_QUERIES} queries and {fixed} tokens of chat "
                f"template). Shorten the {what}.")
        return templated


class PromptEncoder:
    """mllm: the native InternVL model; bridge: meta queries + connector + projector; placement: its `use` runs
    the MLLM on its device. `rules` (PromptRules) prepares and checks every text before any model work."""

    CACHE_SIZE = 32

    def __init__(self, mllm, tokenizer, bridge, placement, model_id: str, log: Callable[[str], None] = print):
        self.mllm, self.tokenizer, self.bridge, self.placement, self.model_id = mllm, tokenizer, bridge, placement, model_id
        self.log = log
        self.rules = PromptRules(tokenizer, mllm.config.text_config.max_position_embeddings)
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()

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
            ids = conditioning.tokenize(self.tokenizer, [texts[i] for i in idx])
            embeds = conditioning.text_token_embeds(self.mllm, ids, self.placement.device("mllm"))
            return conditioning.run_queries(self.mllm, self.bridge.meta_queries, self.bridge, embeds)

        return self._cached([f"text:{t}" for t in texts], compute)

    def encode_prompt(self, prompts: str | list[str]) -> QueryConditioning:
        """Prompt(s) → positive conditioning [B, 256, caption_channels] float32 on the CPU."""
        texts = self.rules.prompts(prompts)
        return QueryConditioning(self._encode_texts(texts), self.model_id, texts)

    def encode_negative(self, negative: str | None = None) -> QueryConditioning:
        """Negative/CFG conditioning [1, 256, C]; empty means the model's default ("Generate an image.")."""
        text = self.rules.negative(negative)
        return QueryConditioning(self._encode_texts([text]), self.model_id, [text])

    def encode_pair(self, prompts: str | list[str], negative: str | None = None
                    ) -> tuple[QueryConditioning, QueryConditioning]:
        """Positive and negative together: what is not cached goes through the LLM in ONE padded batch, as the
        reference does with [prompt, CFG prompt]."""
        texts, neg_text = self.rules.prompts(prompts), self.rules.negative(negative)
        embeds = self._encode_texts(texts + [neg_text])
        return (QueryConditioning(embeds[:-1], self.model_id, texts),
                QueryConditioning(embeds[-1:], self.model_id, [neg_text]))

    def encode_edit(self, images, instruction: str, what: str = "instruction") -> QueryConditioning:
        """Image(s) + instruction → conditioning [B, 256, C] (EXPERIMENTAL upstream; exact to the reference math).

        images: one image or a list/batch (tensors [H,W,C] in 0..1, PIL images or paths). The instruction is checked
        (PromptRules.instruction; `what` names it in messages, e.g. "negative instruction") before any image work."""
        instruction, ids = self.rules.instruction(instruction, what)
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
