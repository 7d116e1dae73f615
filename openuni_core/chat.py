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
from .sampling import check_seed

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


def check_settings(*, max_tiles: int, max_new_tokens: int, temperature: float, seed: int = 0) -> None:
    """Raise OpenUniError, naming the value and the fix, for a chat setting outside options.py's limits."""
    if not isinstance(max_tiles, int) or not 1 <= max_tiles <= MAX_TILES:
        raise OpenUniError(f"max_tiles {max_tiles} is not allowed: use 1 to {MAX_TILES} (InternVL3 uses up to 12).")
    if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise OpenUniError(f"max_new_tokens {max_new_tokens} is not allowed: use 1 to {MAX_NEW_TOKENS}.")
    if (not isinstance(temperature, (int, float)) or temperature != temperature
            or not 0 <= temperature <= MAX_TEMPERATURE):
        raise OpenUniError(f"temperature {temperature} is not allowed: use 0 (greedy) to {MAX_TEMPERATURE:g}.")
    check_seed(seed)


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
    """One row: a checked question (or message) about images[image], or a text-only turn when image is None.

    what: the user's name for the text in messages ("question", "message", "prompt"); own: the part of `text` the
    user typed, when `text` wraps it in an instruction of ours (None: all of it), so a too-long message counts only
    the user's own tokens as theirs."""

    text: str
    image: int | None = None
    what: str = "question"
    own: str | None = None


class AnswerCache:
    """The last ANSWER_CACHE_SIZE greedy answers, by what decides them: the image's pixels, the question, the system
    prompt and the settings. Sampled answers are not cached (ComfyUI already reuses a node's output when none of
    its inputs changed, and a new seed must give a new answer)."""

    def __init__(self, size: int = ANSWER_CACHE_SIZE):
        self.size, self._items = size, OrderedDict()

    def get(self, key):
        """The cached answer for a row key (see `prepare`), or None; a hit becomes the most recently used."""
        if key in self._items:
            self._items.move_to_end(key)
        return self._items.get(key)

    def put(self, key, text: str) -> None:
        """Remember an answer, dropping the least recently used beyond the size."""
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
    """Sampling at `temperature` where every row draws from its own generator, seeded by `row_seed` from the user's
    seed, its image and its question, so an answer depends on those only, never on the other rows of the batch
    (generate's own sampling draws the whole batch from one stream), and two rows never share their draws. Gumbel-max: argmax(logits/T + Gumbel noise) is a draw from softmax(logits/T),
    so generate runs greedily on the noised scores. As InternVL's chat (transformers' sampling defaults), only the
    options.SAMPLING_TOP_K likeliest tokens are drawn from (top_p 1.0: no nucleus cut)."""

    def __init__(self, seeds: list[int], temperature: float, device: torch.device):
        self.temperature = float(temperature)
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]

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
    """What identifies an image for the cache and the row seeds: a SHA-256 of its RGB pixels, and its size."""
    return f"{hashlib.sha256(pil.tobytes()).hexdigest()}:{pil.size}"


def row_seed(seed: int, image: str | None, text: str) -> int:
    """The generator seed of one sampled row: the first 8 bytes of SHA-256 over the user's seed, the image's
    `image_key` (None: a text-only turn) and the row's text, below 2^63 (what torch.Generator takes)."""
    digest = hashlib.sha256(f"{seed}\n{image}\n{text}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


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
    new_tokens: dict  # row key → most tokens its answer may have (max_new_tokens, less near the context's end)
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
    check_settings(max_tiles=max_tiles, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
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
    new_tokens = {k: min(max_new_tokens, context - len(ids[k])) for k in todo}
    return Batch(rows, ids, answers, todo, {k: p for k, p in zip(keys, pils) if k in needed}, new_tokens,
                 None if greedy else temperature, seed, max_tiles, use_thumbnail, cache if greedy else None)


@torch.no_grad()
def generate_answers(mllm, tokenizer, batch: Batch, progress: Callable[[int, int], None] | None = None,
                     interrupt: Callable[[], None] | None = None) -> list[str]:
    """The batch's answers in row order: text without special tokens, stripped. Rows not cached are generated
    together, up to options.MAX_CHAT_ROWS per generate, rows of the same answer budget and similar length side by
    side (less padding); each image goes through the vision tower once; greedy answers go into the cache.
    progress(tokens, total) after each generated token (total: the rows' budgets summed); interrupt() raises."""
    if batch.todo:
        features = _image_features(mllm, list(batch.images.items()), batch.max_tiles, batch.use_thumbnail)
        chunks: list[list] = []  # rows of one answer budget, shortest prompts together (less padding)
        for k in sorted(batch.todo, key=lambda k: (batch.new_tokens[k], len(batch.ids[k]))):
            if chunks and len(chunks[-1]) < MAX_CHAT_ROWS and batch.new_tokens[chunks[-1][0]] == batch.new_tokens[k]:
                chunks[-1].append(k)
            else:
                chunks.append([k])
        done, total = 0, sum(batch.new_tokens.values())
        for chunk in chunks:
            budget = batch.new_tokens[chunk[0]]
            hooks = _ProgressAndInterrupt(done, len(chunk), total, progress, interrupt)
            seeds = None if batch.temperature is None else [row_seed(batch.seed, k[0], k[1]) for k in chunk]
            texts = _generate(mllm, tokenizer, [batch.ids[k] for k in chunk], [features.get(k[0]) for k in chunk],
                              new_tokens=budget, temperature=batch.temperature, seeds=seeds, hooks=hooks)
            batch.answers.update(zip(chunk, texts))
            done += budget * len(chunk)
        for k in batch.todo if batch.cache is not None else ():
            batch.cache.put(k, batch.answers[k])
    return batch.result()


def answer(mllm, tokenizer, images: list, questions: list[Question], *, progress=None, interrupt=None,
           **settings) -> list[str]:
    """`prepare` then `generate_answers`: answers to `questions` about `images`, in order. settings: those of
    `prepare` (system, max_tiles, max_new_tokens, temperature, seed, use_thumbnail, cache)."""
    batch = prepare(tokenizer, context_length(mllm), images, questions, **settings)
    return generate_answers(mllm, tokenizer, batch, progress, interrupt)


def message_rows(message: str, images: int, what: str = "message", own: str | None = None) -> list[Question]:
    """The message about each of `images` images, or once as a text-only turn when there are none (what, own: see
    Question)."""
    return [Question(message, i, what, own) for i in range(images)] or [Question(message, None, what, own)]


def _prompt_ids(tokenizer, context: int, q: Question, tiles: int, system: str) -> list[int]:
    """The row's prompt token ids. Raises OpenUniError when they leave no room for an answer in the context; the
    message counts the user's own tokens apart from the image's, the system prompt's and our template's."""
    ids = tokenizer(conversation(q.text, tiles, system), add_special_tokens=True, verbose=False).input_ids
    if len(ids) < context:
        return ids

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, verbose=False).input_ids) if text else 0

    own, image, system_tokens = count(q.own if q.own is not None else q.text), TOKENS_PER_TILE * tiles, count(system)
    template = len(ids) - own - image - system_tokens
    room = context - 1 - image - system_tokens - template  # at least one token must be left for the answer
    parts = ([f"{tiles} image tile{'s' if tiles != 1 else ''} ({image} tokens)"] if tiles else []) + (
        [f"{system_tokens} tokens of system prompt"] if system_tokens else []) + [f"{template} tokens of chat template"]
    taken = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    fixes = ([f"lower max_tiles (each tile is {TOKENS_PER_TILE} tokens)"] if tiles else []) + (
        ["shorten the system prompt"] if system_tokens else [])
    if room < 1:
        raise OpenUniError(f"{taken[0].upper()}{taken[1:]} leave no room in this model's {context}-token context for "
                           f"the {q.what} ({own} tokens) and an answer; {' or '.join(fixes or [f'shorten the {q.what}'])}.")
    raise OpenUniError(f"The {q.what} is {own} tokens long; with {taken}, this model takes at most {room} tokens for "
                       f"it ({context}-token context). Shorten the {q.what}{''.join(' or ' + f for f in fixes)}.")


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
              temperature: float | None, seeds: list[int] | None, hooks: StoppingCriteria) -> list[str]:
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
    sampling = [] if temperature is None else [_SeededSampling(seeds, temperature, device)]
    out = mllm.generate(inputs_embeds=inputs, attention_mask=mask, generation_config=config,
                        logits_processor=LogitsProcessorList(sampling), stopping_criteria=StoppingCriteriaList([hooks]))
    # With only inputs_embeds given, generate returns the new tokens alone; a finished row continues with padding,
    # and both it and <|im_end|> are special tokens, dropped when decoding.
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out.tolist()]

