"""Understanding tasks on InternVL3 chat: captions and answers about images (presets, several questions at once)
and prompt enhancement. The conversation and the batched generation are chat.py's.
"""

from __future__ import annotations

from .chat import Question, answer, message_rows
from .conditioning import check_user_text
from .errors import OpenUniError
from .options import CAPTION_PRESETS, CUSTOM_QUESTION, DEFAULT_QUESTION, ENHANCE_INSTRUCTION, ENHANCE_WITH_IMAGE


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


def caption_rows(questions: list[str], images: int) -> list[Question]:
    """Every question about every image, image by image and for each image question by question (row
    i·len(questions) + j is question j about image i)."""
    if images < 1:
        raise OpenUniError("No image to caption; connect at least one image.")
    return [Question(q, i) for i in range(images) for q in questions]


def captions(mllm, tokenizer, questions: list[str], images: list, **kwargs) -> list[str]:
    """Every question (checked texts, see `preset_questions`) about every image → answers in `caption_rows` order,
    from one batched generate, each image encoded once. kwargs: those of chat.answer."""
    return answer(mllm, tokenizer, list(images), caption_rows(questions, len(images)), **kwargs)


def caption(mllm, tokenizer, image, *, question: str = DEFAULT_QUESTION, **kwargs) -> str:
    """One question about one image → the answer (an empty question asks for a detailed caption, and the whole text
    is one question). image: a [H,W,C] tensor in 0..1, a PIL image or a path. kwargs: those of chat.answer."""
    return captions(mllm, tokenizer, [single_question(tokenizer, question)], [image], **kwargs)[0]


def single_question(tokenizer, question) -> str:
    """The whole text as one checked question (an empty one asks options.DEFAULT_QUESTION)."""
    return check_user_text(tokenizer, question or "", "question").strip() or DEFAULT_QUESTION


def enhance_rows(prompt: str, images: int) -> list[Question]:
    """Our instruction (options.ENHANCE_INSTRUCTION, plus ENHANCE_WITH_IMAGE with an image) and the user's idea, about
    each image or once without one. prompt: checked text (chat.check_message)."""
    instruction = f"{ENHANCE_INSTRUCTION} {ENHANCE_WITH_IMAGE}" if images else ENHANCE_INSTRUCTION
    return message_rows(f"{instruction}\n\nIdea: {prompt}", images, what="prompt", own=prompt)


def enhanced(texts: list[str], prompt: str) -> list[str]:
    """The enhanced prompts; an empty answer gives back the short prompt (an empty prompt would draw from nothing)."""
    return [t or prompt for t in texts]
