"""`Answerer`: InternVL3's answers — captions, chat and prompt enhancement — for one loaded model.

Settings, texts, images and lengths are checked, and the answer cache consulted, before the MLLM is placed on its
device (chat.prepare), so a bad input fails and a fully cached call returns without placing anything. Every
generated token's logits are checked for inf/NaN, so an fp16 overflow re-runs in a wider dtype (precision.py).
kwargs of the public methods: max_tiles, max_new_tokens, temperature, seed, progress, interrupt (see chat.prepare
and chat.generate_answers).
"""

from __future__ import annotations

from typing import Callable

from . import captioning, chat as chat_ops
from .options import CUSTOM_QUESTION, DEFAULT_ENHANCE_MAX_NEW_TOKENS, DEFAULT_QUESTION
from .placement import Placement
from .precision import check_finite, recovering
from .prompt_encoder import as_image_list


class Answerer:
    """InternVL3 (mllm + tokenizer) answering through `placement` (placement.py or a host's), with an AnswerCache."""

    def __init__(self, mllm, tokenizer, use_thumbnail: bool, placement, log: Callable[[str], None] = print):
        self.mllm, self.tokenizer, self.use_thumbnail, self.placement, self.log = (mllm, tokenizer, use_thumbnail,
                                                                                  placement, log)
        self.cache = chat_ops.AnswerCache()

    @classmethod
    def on_device(cls, mllm, tokenizer, use_thumbnail: bool, device, log: Callable[[str], None] = print) -> Answerer:
        """InternVL3 alone on `device` (the command line's caption and chat), with the same checks and fp16 recovery
        as a whole loaded model."""
        return cls(mllm, tokenizer, use_thumbnail, Placement({"mllm": [mllm]}, {"mllm": device}), log)

    def _answer(self, what: str, images: list, rows: list, *, progress=None, interrupt=None, **settings) -> list[str]:
        batch = chat_ops.prepare(self.tokenizer, chat_ops.context_length(self.mllm), images, rows,
                                 use_thumbnail=self.use_thumbnail, cache=self.cache, **settings)
        if not batch.todo:
            return batch.result()

        def run() -> list[str]:  # every token's logits are checked: an fp16 overflow re-runs in a wider dtype
            hook = self.mllm.get_output_embeddings().register_forward_hook(
                lambda m, args, out: check_finite(out, "mllm", f"while {what}"))
            try:
                with self.placement.use("mllm", what):
                    return chat_ops.generate_answers(self.mllm, self.tokenizer, batch, progress, interrupt)
            finally:
                hook.remove()

        return recovering(self.placement, "mllm", run, self.log)

    def caption(self, image, question: str = DEFAULT_QUESTION, **kwargs) -> str:
        """One question about one image → the answer text (the whole question is one question; empty: a detailed
        caption). image: a [H,W,C] tensor in 0..1, a PIL image or a path."""
        question = captioning.single_question(self.tokenizer, question)
        return self._answer("captioning", [image], captioning.caption_rows([question], 1), **kwargs)[0]

    def captions(self, images, question: str = DEFAULT_QUESTION, *, preset: str = CUSTOM_QUESTION,
                 **kwargs) -> list[str]:
        """Images (one, a list or a [B,H,W,C] batch) × the preset's questions (custom: one per line of `question`) →
        answers image by image, question by question (captioning.caption_rows), from one batched generate, each
        image encoded once."""
        questions = captioning.preset_questions(self.tokenizer, preset, question)
        images = as_image_list(images)
        return self._answer("captioning", images, captioning.caption_rows(questions, len(images)), **kwargs)

    def chat(self, message: str, images=None, *, system: str = "", **kwargs) -> list[str]:
        """A message (optionally about images) → one answer per image, or one for a text-only message. system: ""
        for InternVL3's own system prompt."""
        message, system = chat_ops.check_message(self.tokenizer, message), chat_ops.check_system(self.tokenizer, system)
        images = [] if images is None else as_image_list(images)
        return self._answer("chatting", images, chat_ops.message_rows(message, len(images)), system=system, **kwargs)

    def enhance_prompt(self, prompt: str, images=None, *, max_new_tokens: int = DEFAULT_ENHANCE_MAX_NEW_TOKENS,
                       **kwargs) -> list[str]:
        """A short prompt (optionally with reference images) → detailed generation prompts, one per image
        (captioning.enhance_rows; an empty answer gives back the short prompt)."""
        prompt = chat_ops.check_message(self.tokenizer, prompt, "prompt")
        images = [] if images is None else as_image_list(images)
        texts = self._answer("enhancing the prompt", images, captioning.enhance_rows(prompt, len(images)),
                             max_new_tokens=max_new_tokens, **kwargs)
        return captioning.enhanced(texts, prompt)
