"""Understanding tasks on InternVL3 chat: captions and answers about images (presets, several questions at once)
and prompt enhancement. The conversation and the batched generation are chat.py's.
"""

from __future__ import annotations

# check_settings is re-exported for the CLI's caption verb.
from .chat import Question, answer, check_message, check_settings, conversation  # noqa: F401
from .conditioning import check_user_text
from .errors import OpenUniError
from .options import (CAPTION_PRESETS, CUSTOM_QUESTION, DEFAULT_ENHANCE_MAX_NEW_TOKENS, DEFAULT_QUESTION,
                      ENHANCE_INSTRUCTION, ENHANCE_WITH_IMAGE)


def chat_query(question: str, num_tiles: int) -> str:
    """The captioning prompt: one question about an image of `num_tiles` views, with InternVL3's system prompt."""
    return conversation(question, num_tiles)


def preset_questions(tokenizer, preset: str = CUSTOM_QUESTION, question: str = DEFAULT_QUESTION) -> list[str]:
    """The questions a caption preset asks (options.CAPTION_PRESETS): its own question, or for the custom preset each
    non-empty line of `question` (no line at all: the detailed-caption question). Raises OpenUniError for an
    unknown preset, text that is not text or spells a control token of the chat format."""
    if preset not in CAPTION_PRESETS:
        raise OpenUniError(f"Unknown caption preset {preset!r}; choose one of {', '.join(CAPTION_PRESETS)}.")
    if CAPTION_PRESETS[preset] is not None:
        return [CAPTION_PRESETS[preset]]
    text = check_user_text(tokenizer, "" if question is None else question, "question")
    return [line.strip() for line in text.splitlines() if line.strip()] or [DEFAULT_QUESTION]


def captions(mllm, tokenizer, questions: list[str], images: list, **kwargs) -> list[str]:
    """Every question about every image → answers ordered image by image, and for each image question by question
    (answer[i·len(questions) + j] is question j about image i).

    questions: checked texts (see `preset_questions`). Each image is encoded once; all answers come from one
    batched generate. kwargs: those of chat.answer (max_tiles, max_new_tokens, temperature, seed, cache, ...).
    """
    if not images:
        raise OpenUniError("No image to caption; connect at least one image.")
    rows = [Question(q, i) for i in range(len(images)) for q in questions]
    return answer(mllm, tokenizer, list(images), rows, **kwargs)


def caption(mllm, tokenizer, image, *, question: str = DEFAULT_QUESTION, **kwargs) -> str:
    """One question about one image → the answer (an empty question asks for a detailed caption, and the whole text
    is one question). image: a [H,W,C] tensor in 0..1, a PIL image or a path. kwargs: those of chat.answer."""
    question = check_user_text(tokenizer, question or "", "question").strip() or DEFAULT_QUESTION
    return captions(mllm, tokenizer, [question], [image], **kwargs)[0]


def enhance_message(prompt: str, with_image: bool) -> str:
    """Our instruction (options.ENHANCE_INSTRUCTION) around the user's idea."""
    return f"{ENHANCE_INSTRUCTION}{' ' + ENHANCE_WITH_IMAGE if with_image else ''}\n\nIdea: {prompt}"


def enhance_prompt(mllm, tokenizer, prompt: str, images: list | None = None, *,
                   max_new_tokens: int = DEFAULT_ENHANCE_MAX_NEW_TOKENS, **kwargs) -> list[str]:
    """A short prompt (and optionally reference images) → a detailed image-generation prompt, one per image (one
    without images). An empty answer gives back the short prompt. kwargs: those of chat.answer."""
    prompt = check_message(tokenizer, prompt, "prompt")
    images = list(images or [])
    message = enhance_message(prompt, bool(images))
    rows = [Question(message, i) for i in range(len(images))] or [Question(message)]
    texts = answer(mllm, tokenizer, images, rows, max_new_tokens=max_new_tokens, **kwargs)
    return [t or prompt for t in texts]
