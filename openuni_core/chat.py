"""InternVL3 chat: conversations in its own format, answered many at a time, with image reuse and an answer cache.

One call answers many rows, each a question about one image (or a text-only turn). Every distinct image goes
through the vision tower once, whatever the number of questions about it; its tokens are spliced into the
embeddings of every row that asks about it; the rows are then generated together by transformers' own
`generate` on the native InternVL model: left-padded, with an attention mask, each row stopping at its own
<|im_end|>. Greedy answers are kept in an `AnswerCache`, so a repeated question about an unchanged image costs
no forward at all.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from .conditioning import check_user_text, image_tokens, splice_image_tokens, text_token_embeds
from .errors import OpenUniError
from .images import caption_pixel_values, tile_count, to_pil
from .internvl import IM_END, IM_START, IMG_CONTEXT, IMG_END, IMG_START, TOKENS_PER_TILE
from .options import (ANSWER_CACHE_SIZE, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_TILES, GREEDY_BELOW, MAX_CHAT_ROWS,
                      MAX_NEW_TOKENS, MAX_TEMPERATURE, MAX_TILES, MAX_VISION_TILES, SAMPLING_TOP_K)

# InternVL3's own system prompt (its InternVL2.5 chat template), used when the caller gives none.
SYSTEM_MESSAGE = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"


def conversation(message: str, tiles: int = 0, system: str | None = None) -> str:
    """One user turn in InternVL3's chat format, ending with the assistant's cue.

    tiles: the image's 448×448 views (0: a text-only turn, without the image line); each is 256 <IMG_CONTEXT>
    slots between <img> and </img>, on the line before the message. system: None or "" for InternVL3's own.
    """
    image = f"{IMG_START}{IMG_CONTEXT * (TOKENS_PER_TILE * tiles)}{IMG_END}\n" if tiles else ""
    return (f"{IM_START}system\n{system or SYSTEM_MESSAGE}{IM_END}\n"
            f"{IM_START}user\n{image}{message}{IM_END}\n{IM_START}assistant\n")


def check_settings(*, max_tiles: int, max_new_tokens: int, temperature: float) -> None:
    """Raise OpenUniError, naming the value and the fix, for a chat setting outside options.py's limits."""
    if not isinstance(max_tiles, int) or not 1 <= max_tiles <= MAX_TILES:
        raise OpenUniError(f"max_tiles {max_tiles} is not allowed: use 1 to {MAX_TILES} (InternVL3 uses up to 12).")
    if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise OpenUniError(f"max_new_tokens {max_new_tokens} is not allowed: use 1 to {MAX_NEW_TOKENS}.")
    if (not isinstance(temperature, (int, float)) or temperature != temperature
            or not 0 <= temperature <= MAX_TEMPERATURE):
        raise OpenUniError(f"temperature {temperature} is not allowed: use 0 (greedy) to {MAX_TEMPERATURE:g}.")


def check_message(tokenizer, text, what: str = "message") -> str:
    """The user's text, cleaned and stripped; raises OpenUniError if it is not text, spells a control token of the
    chat format, or is empty."""
    text = check_user_text(tokenizer, "" if text is None else text, what).strip()
    if not text:
        raise OpenUniError(f"The {what} is empty; type some text.")
    return text


def check_system(tokenizer, system) -> str:
    """A system prompt ("" or None: InternVL3's own), checked like any user text."""
    return check_user_text(tokenizer, system or "", "system prompt").strip()


@dataclass(frozen=True)
class Question:
    """One row: a checked question (or message) about images[image], or a text-only turn when image is None."""

    text: str
    image: int | None = None


class AnswerCache:
    """The last ANSWER_CACHE_SIZE greedy answers, by what decides them: the image's pixels, the question, the system
    prompt and the settings. Sampled answers are not cached (ComfyUI already reuses a node's output when none of
    its inputs changed, and a new seed must give a new answer)."""

    def __init__(self, size: int = ANSWER_CACHE_SIZE):
        self.size, self._items = size, OrderedDict()

    def get(self, key):
        if key in self._items:
            self._items.move_to_end(key)
        return self._items.get(key)

    def put(self, key, text: str) -> None:
        self._items[key] = text
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class _ProgressAndInterrupt(StoppingCriteria):
    """transformers' generate offers no per-token callback; a stopping criterion is called after every token, so this
    one carries the host's progress and interrupt hooks into the loop. It never stops generation itself."""

    def __init__(self, done: int, rows: int, total: int, progress, interrupt):
        self.done, self.rows, self.total, self.progress, self.interrupt = done, rows, total, progress, interrupt
        self.steps = 0

    def __call__(self, input_ids, scores, **kwargs):
        self.steps += 1
        if self.interrupt is not None:
            self.interrupt()
        if self.progress is not None:
            self.progress(min(self.done + self.steps * self.rows, self.total), self.total)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class _SeededSampling(LogitsProcessor):
    """Sampling at `temperature` where every row draws from its own generator seeded with `seed`, so an answer depends
    on its own image, question and seed only, never on the other rows of the batch (generate's own sampling draws
    the whole batch from one stream). Gumbel-max: argmax(logits/T + Gumbel noise) is a draw from softmax(logits/T),
    so generate runs greedily on the noised scores. As InternVL's chat (transformers' sampling defaults), only the
    options.SAMPLING_TOP_K likeliest tokens are drawn from (top_p 1.0: no nucleus cut)."""

    def __init__(self, rows: int, temperature: float, seed: int, device: torch.device):
        self.temperature = float(temperature)
        self.generators = [torch.Generator(device=device).manual_seed(int(seed) % (2**63)) for _ in range(rows)]

    def __call__(self, input_ids, scores):
        scores = scores.float()
        if scores.shape[-1] > SAMPLING_TOP_K:  # transformers' TopKLogitsWarper: only the k likeliest tokens stay
            kth = torch.topk(scores, SAMPLING_TOP_K, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device, dtype=torch.float32)
                               for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp_(min=torch.finfo(torch.float32).tiny)))
        return scores / self.temperature + gumbel


def image_key(pil) -> str:
    return f"{hashlib.sha256(pil.tobytes()).hexdigest()}:{pil.size}"


def context_length(mllm) -> int:
    """The LLM's context in tokens (prompt and answer together)."""
    return int(mllm.config.text_config.max_position_embeddings)


@dataclass
class Batch:
    """One call's rows, checked and tokenized, with what the cache already knows: everything decided before any
    model work (`prepare`), so a bad input fails, and a fully cached call returns, without touching the model."""

    rows: list  # each question's row key (image key or None, text, settings), in the caller's order
    ids: dict  # distinct row key → prompt token ids
    answers: dict  # row key → answer, from the cache so far
    todo: list  # row keys to generate
    images: dict  # image key → PIL image, for the rows to generate
    new_tokens: int
    temperature: float | None  # None: greedy
    seed: int
    max_tiles: int
    use_thumbnail: bool
    cache: AnswerCache | None

    def result(self) -> list[str]:
        return [self.answers[k] for k in self.rows]


def prepare(tokenizer, context: int, images: list, questions: list[Question], *, system: str = "",
            max_tiles: int = DEFAULT_MAX_TILES, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float = 0.0,
            seed: int = 0, use_thumbnail: bool = True, cache: AnswerCache | None = None) -> Batch:
    """Check and tokenize `questions` (checked texts, see `check_message`) about `images` ([H,W,C] tensors in 0..1,
    PIL images or paths; Question.image indexes them), and look greedy rows up in `cache`. No model work.

    context: the LLM's context (`context_length`). Raises OpenUniError for bad settings or images, and when a row
    does not fit the context. The same question about the same pixels becomes one row.
    """
    check_settings(max_tiles=max_tiles, max_new_tokens=max_new_tokens, temperature=temperature)
    pils = [to_pil(im) for im in images]
    tiles = [tile_count(p.width, p.height, max_tiles, use_thumbnail) for p in pils]
    keys = [image_key(p) for p in pils]
    greedy = temperature < GREEDY_BELOW
    settings = (system, max_tiles, use_thumbnail, max_new_tokens) if greedy else (system, max_tiles, use_thumbnail,
                                                                                  max_new_tokens, temperature, seed)
    rows = [(None if q.image is None else keys[q.image], q.text, settings) for q in questions]
    ids = {}
    for q, key in zip(questions, rows):
        if key not in ids:
            ids[key] = _prompt_ids(tokenizer, context, q, 0 if q.image is None else tiles[q.image], system)
    answers = {k: cache.get(k) for k in ids} if cache is not None and greedy else {}
    todo = [k for k in ids if answers.get(k) is None]
    needed = {k[0] for k in todo}
    new_tokens = min(max_new_tokens, context - max(len(ids[k]) for k in todo)) if todo else max_new_tokens
    return Batch(rows, ids, answers, todo, {k: p for k, p in zip(keys, pils) if k in needed}, new_tokens,
                 None if greedy else temperature, seed, max_tiles, use_thumbnail, cache if greedy else None)


@torch.no_grad()
def generate_answers(mllm, tokenizer, batch: Batch, progress: Callable[[int, int], None] | None = None,
                     interrupt: Callable[[], None] | None = None) -> list[str]:
    """The batch's answers in row order: text without special tokens, stripped. Rows not cached are generated
    together (up to options.MAX_CHAT_ROWS per generate), each image through the vision tower once; greedy answers go
    into the cache. progress(tokens, total) after each generated token of the batch (total: rows to generate ×
    new tokens); interrupt() raises to stop."""
    if batch.todo:
        features = _image_features(mllm, list(batch.images.items()), batch.max_tiles, batch.use_thumbnail)
        total, step = len(batch.todo) * batch.new_tokens, MAX_CHAT_ROWS
        for start in range(0, len(batch.todo), step):
            chunk = batch.todo[start:start + step]
            hooks = _ProgressAndInterrupt(start * batch.new_tokens, len(chunk), total, progress, interrupt)
            texts = _generate(mllm, tokenizer, [batch.ids[k] for k in chunk], [features.get(k[0]) for k in chunk],
                              new_tokens=batch.new_tokens, temperature=batch.temperature, seed=batch.seed, hooks=hooks)
            batch.answers.update(zip(chunk, texts))
        for k in batch.todo if batch.cache is not None else ():
            batch.cache.put(k, batch.answers[k])
    return batch.result()


def answer(mllm, tokenizer, images: list, questions: list[Question], *, progress=None, interrupt=None,
           **settings) -> list[str]:
    """`prepare` then `generate_answers`: answers to `questions` about `images`, in order. settings: those of
    `prepare` (system, max_tiles, max_new_tokens, temperature, seed, use_thumbnail, cache)."""
    batch = prepare(tokenizer, context_length(mllm), images, questions, **settings)
    return generate_answers(mllm, tokenizer, batch, progress, interrupt)


def message_rows(message: str, images: int) -> list[Question]:
    """The message about each of `images` images, or once as a text-only turn when there are none."""
    return [Question(message, i) for i in range(images)] or [Question(message)]


def _prompt_ids(tokenizer, context: int, q: Question, tiles: int, system: str) -> list[int]:
    """The row's prompt token ids. Raises OpenUniError when they leave no room for an answer in the context; the
    message counts the user's own tokens apart from the image's and the template's (system prompt included)."""
    ids = tokenizer(conversation(q.text, tiles, system), add_special_tokens=True, verbose=False).input_ids
    if len(ids) < context:
        return ids
    what = "question" if q.image is not None else "message"
    own = len(tokenizer(q.text, add_special_tokens=False, verbose=False).input_ids)
    image = TOKENS_PER_TILE * tiles
    template = len(ids) - own - image
    room = context - 1 - image - template  # at least one token must be left for the answer
    images = f"{tiles} image tiles ({image} tokens) and " if tiles else ""
    if room < 1:
        raise OpenUniError(
            f"The image takes {tiles} tiles ({image} tokens) and the chat template {template} tokens, which leaves no "
            f"room in this model's {context}-token context for the {what} ({own} tokens) and an answer; lower "
            f"max_tiles (each tile is {TOKENS_PER_TILE} tokens) or shorten the system prompt.")
    fix = f"Shorten the {what} or lower max_tiles." if tiles else f"Shorten the {what}."
    raise OpenUniError(f"The {what} is {own} tokens long; with {images}{template} tokens of chat template, this model "
                       f"takes at most {room} tokens for it ({context}-token context). {fix}")


def _image_features(mllm, images: list[tuple[str, object]], max_tiles: int, use_thumbnail: bool
                    ) -> dict[str, torch.Tensor]:
    """Image key → its image tokens [tiles, 256, llm_hidden]; the tiles of several images share one vision-tower
    forward, up to options.MAX_VISION_TILES tiles each."""
    out, batch, size = {}, [], 0

    def flush():
        if batch:
            pixels = torch.cat([p for _, p in batch]).to(device=mllm.device, dtype=mllm.dtype)
            tokens = image_tokens(mllm, pixels)
            for (key, p), part in zip(batch, tokens.split([p.shape[0] for _, p in batch])):
                out[key] = part
            batch.clear()

    for key, pil in images:
        pixels = caption_pixel_values(pil, max_tiles, use_thumbnail)
        if batch and size + pixels.shape[0] > MAX_VISION_TILES:
            flush()
            size = 0
        batch.append((key, pixels))
        size += pixels.shape[0]
    flush()
    return out


def _generate(mllm, tokenizer, ids: list[list[int]], features: list[torch.Tensor | None], *, new_tokens: int,
              temperature: float | None, seed: int, hooks: StoppingCriteria) -> list[str]:
    """One batched generate: rows left-padded (position ids follow the attention mask), each stopping at <|im_end|>."""
    device = mllm.device
    context_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    rows = []
    for row, tokens in zip(ids, features):
        row = torch.tensor(row, dtype=torch.long)
        embeds = text_token_embeds(mllm, [row], device)[0]
        rows.append(embeds if tokens is None else splice_image_tokens(embeds, row.to(device), tokens, context_id))
    longest = max(r.shape[0] for r in rows)
    inputs = rows[0].new_zeros(len(rows), longest, rows[0].shape[-1])
    mask = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        inputs[i, longest - r.shape[0]:] = r
        mask[i, longest - r.shape[0]:] = 1
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else im_end
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                              eos_token_id=im_end, pad_token_id=pad)
    sampling = [] if temperature is None else [_SeededSampling(len(rows), temperature, seed, device)]
    out = mllm.generate(inputs_embeds=inputs, attention_mask=mask, generation_config=config,
                        logits_processor=LogitsProcessorList(sampling), stopping_criteria=StoppingCriteriaList([hooks]))
    # With only inputs_embeds given, generate returns the new tokens alone; a finished row continues with padding,
    # and both it and <|im_end|> are special tokens, dropped when decoding.
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out.tolist()]


def chat(mllm, tokenizer, message: str, images: list | None = None, *, system: str = "", **kwargs) -> list[str]:
    """A message (and optionally images) → one answer per image, or one answer for a text-only message.

    message and system are checked here (`check_message`, `check_system`); kwargs: those of `answer`.
    """
    message, system = check_message(tokenizer, message), check_system(tokenizer, system)
    images = list(images or [])
    return answer(mllm, tokenizer, images, message_rows(message, len(images)), system=system, **kwargs)
