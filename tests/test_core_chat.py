"""InternVL3 chat, batched captioning, image reuse, the answer cache and prompt enhancement, on the tiny models.

References are independent: prompts are built here from the literal published InternVL2.5 template, pixels from
the literal ImageNet mean/std, and answers computed by transformers' own `generate` on the same loaded weights
(one row at a time, with input_ids and pixel_values: the model's own image path).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openuni_core import chat, options
from openuni_core.chat import Question
from openuni_core.errors import OpenUniError
from openuni_core.images import caption_pixel_values
from openuni_core.loading import load_openuni
from probes import counting_llm_forwards, counting_vision_forwards, make_talkative

SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ROOT = Path(__file__).resolve().parents[1]


def literal_prompt(question: str, tiles: int = 0, system: str = SYSTEM) -> str:
    image = "<img>" + "<IMG_CONTEXT>" * (256 * tiles) + "</img>\n" if tiles else ""
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{image}{question}<|im_end|>\n"
            "<|im_start|>assistant\n")


@torch.no_grad()
def reference(model, text: str, pixel_values=None, max_new_tokens: int = 12) -> str:
    """Greedy, one row, transformers' generate; the answer is the new tokens decoded without special tokens."""
    tok = model.tokenizer
    ids = torch.tensor([tok(text).input_ids])
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    image = {} if pixel_values is None else {"pixel_values": pixel_values}
    out = model.mllm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **image,
                              max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=im_end, pad_token_id=im_end)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def u8_image(h: int, w: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def literal_pixels(image: Image.Image) -> torch.Tensor:
    """A 448×448 image is one tile: its pixels / 255, normalised with ImageNet's mean and std."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return ((x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1))[None]


@pytest.fixture(scope="module")
def talk(tiny):
    """A model whose LLM gives varied answers (see probes.make_talkative), loaded from the tiny files."""
    m = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    make_talkative(m.mllm)
    return m


@pytest.fixture
def fresh(talk):
    talk.answers.clear()
    return talk


def test_text_only_chat_equals_transformers_generate(fresh):
    """Catches: a changed system prompt or template, an image line in a text-only turn, a wrong stop/decode rule."""
    answers = []
    for message, system in (("Describe a red fox.", ""), ("What is in the picture?", "You answer in one word.")):
        (ours,) = fresh.chat(message, system=system, max_new_tokens=12)
        assert ours == reference(fresh, literal_prompt(message, system=system or SYSTEM))
        answers.append(ours)
    assert answers[0] and answers[0] != answers[1]  # real, input-dependent text


def test_chat_about_an_image_equals_transformers_generate_with_its_pixels(fresh):
    """A 448×448 image is one tile. Catches: a changed image line, tile count, normalisation or splice position."""
    image = u8_image(448, 448, seed=3)
    (ours,) = fresh.chat("What is in the picture?", [image], max_new_tokens=12)
    assert ours == reference(fresh, literal_prompt("What is in the picture?", tiles=1), literal_pixels(image))
    assert ours != fresh.chat("What is in the picture?", max_new_tokens=12)[0]  # the image matters
    assert fresh.caption(image, "What is in the picture?", max_new_tokens=12) == ours


def test_batched_rows_equal_sequential_generate_and_encode_each_image_once(fresh):
    """Rows of different lengths (1 and 3 tiles, text-only) in ONE batched generate, left-padded, equal one-at-a-time
    generate. Catches: right padding, an attention mask that lets rows see their padding, features spliced into the
    wrong row."""
    images = [u8_image(448, 448, seed=1), u8_image(448, 896, seed=2), u8_image(64, 80, seed=3)]
    rows = [Question("What is in the picture?", 0), Question("Describe a red fox."),
            Question("What is in the picture?", 1), Question("Where is it?", 2), Question("Where is it?", 1)]
    with counting_vision_forwards(fresh) as vision, counting_llm_forwards(fresh) as llm:
        ours = chat.answer(fresh.mllm, fresh.tokenizer, images, rows, max_new_tokens=10)
    expected = []
    for q in rows:
        pixels = None if q.image is None else caption_pixel_values(images[q.image], options.DEFAULT_MAX_TILES)
        tiles = 0 if pixels is None else pixels.shape[0]
        expected.append(reference(fresh, literal_prompt(q.text, tiles), pixels, max_new_tokens=10))
    assert ours == expected
    assert len(set(ours)) >= 3
    assert vision[0] == 1  # the tiles of all three images in one vision-tower forward
    assert llm[0] <= 10  # one batched generate: one forward per new token, not one per row


def test_several_questions_encode_the_image_once_and_a_repeat_costs_no_forward(fresh, monkeypatch):
    """Catches: per-question image encoding, a cache that ignores pixels, questions or settings, caching samples,
    a cached call that still places the MLLM on its device."""
    image = torch.rand(120, 480, 3)
    for n in (1, 4):
        fresh.answers.clear()
        with counting_vision_forwards(fresh) as vision:
            answers = fresh.captions(image, "\n".join(["What?", "Where?", "Why?", "Who?"][:n]), max_new_tokens=6)
        assert len(answers) == n and vision[0] == 1
    with monkeypatch.context() as m, counting_vision_forwards(fresh) as vision, counting_llm_forwards(fresh) as llm:
        m.setattr(fresh.placement, "use", lambda *a, **k: pytest.fail("the MLLM was placed for cached answers"))
        again = fresh.captions(image, "What?\nWhere?\nWhy?\nWho?", max_new_tokens=6)
    assert again == answers and vision[0] == 0 and llm[0] == 0
    changed = image.clone()
    changed[0, 0, 0] = 1 - changed[0, 0, 0]
    for call in (lambda: fresh.captions(changed, "What?", max_new_tokens=6),
                 lambda: fresh.captions(image, "What is it?", max_new_tokens=6),
                 lambda: fresh.captions(image, "What?", max_new_tokens=7),
                 lambda: fresh.captions(image, "What?", max_new_tokens=6, max_tiles=2),
                 lambda: fresh.chat("What?", [image], system="Be brief.", max_new_tokens=6),
                 lambda: fresh.captions(image, "What?", max_new_tokens=6, temperature=1.0, seed=4),
                 lambda: fresh.captions(image, "What?", max_new_tokens=6, temperature=1.0, seed=4)):
        with counting_llm_forwards(fresh) as llm:
            call()
        assert llm[0] > 0


class RowScriptHead(torch.nn.Module):
    """Stands in for lm_head: row r of the batch emits scripts[r] one token per call (independent of the LLM)."""

    def __init__(self, vocab: int, scripts: list[list[int]]):
        super().__init__()
        self.vocab, self.scripts, self.calls = vocab, scripts, 0

    def forward(self, h):
        out = torch.full((*h.shape[:-1], self.vocab), -1e4, dtype=h.dtype)
        for r, script in enumerate(self.scripts):
            out[r, ..., script[min(self.calls, len(script) - 1)]] = 0.0
        self.calls += 1
        return out


@pytest.fixture
def scripted(fresh):
    original = fresh.mllm.lm_head

    def install(texts_after):
        tok = fresh.tokenizer
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        scripts = [tok(text, add_special_tokens=False).input_ids + [im_end] + after for text, after in texts_after]
        fresh.mllm.lm_head = RowScriptHead(fresh.mllm.config.text_config.vocab_size, scripts)
        return fresh.mllm.lm_head

    yield install
    fresh.mllm.lm_head = original


def test_each_row_stops_at_its_own_im_end(fresh, scripted):
    """Catches: one stop for the whole batch, tokens after a row's <|im_end|> kept, special tokens in the text."""
    junk = fresh.tokenizer("never", add_special_tokens=False).input_ids
    head = scripted([("a fox", junk * 8), ("The image shows a small house near a lake", junk * 8)])
    progress = []
    answers = fresh.captions(torch.rand(64, 64, 3), "What?\nWhere?", max_new_tokens=30,
                             progress=lambda i, n: progress.append((i, n)))
    assert answers == ["a fox", "The image shows a small house near a lake"]
    longest = len(fresh.tokenizer("The image shows a small house near a lake", add_special_tokens=False).input_ids)
    assert head.calls == longest + 1  # generation ends when the last row reaches its <|im_end|>
    assert progress[-1] == ((longest + 1) * 2, 60)  # tokens of both rows so far, of 2 × 30


def test_an_empty_enhancement_gives_the_short_prompt_back(fresh, scripted):
    """Catches: an empty model answer passed on as an empty prompt (Text Encode would draw from nothing)."""
    scripted([("", [])])
    assert fresh.enhance_prompt("a fox in the snow") == ["a fox in the snow"]


def test_enhance_asks_our_instruction_about_the_idea(fresh):
    """Catches: the instruction or the idea left out of the message, or an image line without an image."""
    (ours,) = fresh.enhance_prompt("a fox in the snow", max_new_tokens=12)
    message = f"{options.ENHANCE_INSTRUCTION}\n\nIdea: a fox in the snow"
    assert ours == reference(fresh, literal_prompt(message))
    image = u8_image(448, 448, seed=9)
    (with_image,) = fresh.enhance_prompt("a fox in the snow", [image], max_new_tokens=12)
    message = f"{options.ENHANCE_INSTRUCTION} {options.ENHANCE_WITH_IMAGE}\n\nIdea: a fox in the snow"
    assert with_image == reference(fresh, literal_prompt(message, tiles=1), literal_pixels(image))


def test_sampled_answers_depend_on_their_own_row_and_seed_only(fresh):
    """Catches: one random stream for the whole batch (a row's answer would change with the other rows)."""
    images = [torch.rand(48, 48, 3), torch.rand(64, 32, 3), torch.rand(32, 96, 3)]
    kw = dict(max_new_tokens=8, temperature=1.0)
    together = fresh.captions(images, "What?\nWhere?", seed=11, **kw)
    alone = [fresh.captions(im, q, seed=11, **kw)[0] for im in images for q in ("What?", "Where?")]
    assert together == alone
    assert fresh.captions(images[0], "What?", seed=12, **kw) != [alone[0]]
    assert fresh.captions(images[0], "What?", **kw, seed=11) == [alone[0]]


def test_seeded_sampling_draws_from_the_softmax_at_the_temperature():
    """20 000 draws of one row against softmax(logits / T). Catches: temperature applied twice or not at all, a
    biased noise (e.g. uniform instead of Gumbel)."""
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0]])
    t = 0.7
    sampler = chat._SeededSampling([3], t, device=torch.device("cpu"))
    draws = np.array([int(sampler(None, logits.clone()).argmax()) for _ in range(20000)])
    freq = np.bincount(draws, minlength=5) / len(draws)
    expected = np.exp(logits[0].numpy() / t) / np.exp(logits[0].numpy() / t).sum()
    assert np.abs(freq - expected).max() < 0.015, (freq, expected)


def test_custom_questions_one_per_line_in_image_then_question_order(fresh):
    """Catches: a multi-line question asked whole, blank lines asked, answers ordered question-major."""
    images = [torch.rand(40, 40, 3), torch.rand(56, 40, 3)]
    answers = fresh.captions(images, "What?\n\n  Where? \n", max_new_tokens=6)
    assert answers == [fresh.caption(im, q, max_new_tokens=6) for im in images for q in ("What?", "Where?")]
    assert fresh.caption(images[0], "What?\nWhere?", max_new_tokens=6) not in answers[:2]  # caption: one question


@pytest.mark.parametrize("call, message", [
    (lambda m: m.chat(""), r"The message is empty"),
    (lambda m: m.chat("  \n "), r"The message is empty"),
    (lambda m: m.chat(None), r"The message is empty"),
    (lambda m: m.chat(5), r"must be text, got int"),
    (lambda m: m.chat("hi <|im_end|> <IMG_CONTEXT>"), r"contains \['<IMG_CONTEXT>', '<\|im_end\|>'\]: control tokens"),
    (lambda m: m.chat("hi", system="<|im_start|>system"), r"system prompt contains \['<\|im_start\|>'\]"),
    (lambda m: m.chat("fox " * 9000), r"The message is \d+ tokens long; with \d+ tokens of chat template, this model takes at most \d+ tokens"),
    (lambda m: m.chat("fox " * 8000, [torch.rand(100, 400, 3)], max_tiles=4),
     r"The message is \d+ tokens long; with 5 image tiles \(1280 tokens\)"),
    (lambda m: m.enhance_prompt("fox " * 9000), r"The prompt is 900\d tokens long; with \d+ tokens of chat template"),
    (lambda m: m.chat("hi", system="fox " * 9000),
     r"900\d tokens of system prompt and \d+ tokens of chat template leave no room .* for the message \(\d tokens\) "
     r"and an answer; shorten the system prompt\.$"),
    (lambda m: m.captions(torch.rand(8, 8, 3), "What?", temperature=1.0, seed=None), r"seed None is not allowed"),
    (lambda m: m.chat("hi", seed=-1), r"seed -1 is not allowed: use a whole number from 0 to"),
    (lambda m: m.chat("hi", [torch.full((8, 8, 3), float("nan"))]), r"NaN or infinite"),
    (lambda m: m.chat("hi", max_new_tokens=0), r"max_new_tokens 0 is not allowed"),
    (lambda m: m.enhance_prompt(""), r"The prompt is empty"),
    (lambda m: m.enhance_prompt("a <|im_end|>"), r"prompt contains \['<\|im_end\|>'\]"),
    (lambda m: m.enhance_prompt("a fox", temperature=-1), r"temperature -1 is not allowed"),
    (lambda m: m.captions(torch.rand(8, 8, 3), preset="poem"), r"Unknown caption preset 'poem'; choose one of"),
    (lambda m: m.captions(torch.rand(8, 8, 3), "ok\n<img>"), r"question contains \['<img>'\]"),
], ids=["empty", "blank", "none", "not text", "control tokens", "system control token", "too long", "too long, image",
        "enhance too long", "system prompt too long", "seed None", "seed -1", "nan image", "max_new_tokens 0",
        "enhance empty", "enhance control token", "enhance temperature",
        "unknown preset", "control token on a second line"])
def test_bad_input_is_refused_with_one_line_before_any_forward(fresh, monkeypatch, call, message):
    """The same checks and messages as captioning, one line each, before the MLLM is placed on its device (with an
    offload setting that copies it to the GPU) and before any image work or generation. Catches: a check moved after
    placement, the vision tower or generate, a message that loses its fix, a missing check (e.g. the system
    prompt's control tokens)."""
    monkeypatch.setattr(fresh.placement, "use", lambda *a, **k: pytest.fail("the MLLM was placed on its device"))
    monkeypatch.setattr(fresh.mllm.model, "get_image_features", lambda *a, **k: pytest.fail("image work started"))
    monkeypatch.setattr(fresh.mllm, "generate", lambda *a, **k: pytest.fail("generation started"))
    with pytest.raises(OpenUniError, match=message) as e:
        call(fresh)
    assert "\n" not in str(e.value)


def test_cli_chat_prints_the_answer_and_refuses_bad_input(tiny, fresh, tmp_path):
    """Catches: the chat verb ignoring --system or --image, or a traceback instead of the one-line error."""
    image = tmp_path / "im.png"
    u8_image(448, 448, seed=5).save(image)
    base = [sys.executable, "-m", "openuni_core", "chat", "--mllm", str(tiny.mllm_original), "--dtype", "fp32",
            "--device", "cpu", "--max-new-tokens", "6"]
    model = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    for extra, expected in (([], model.chat("Describe a red fox.", max_new_tokens=6)[0]),
                            (["--system", "Be brief.", "--image", str(image)],
                             model.chat("Describe a red fox.", [Image.open(image)], system="Be brief.",
                                        max_new_tokens=6)[0])):
        r = subprocess.run(base + ["--message", "Describe a red fox.", *extra], capture_output=True, text=True,
                           cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout == expected + "\n"
    r = subprocess.run(base + ["--message", "hi <|im_end|>"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "control tokens" in r.stderr and "Traceback" not in r.stderr


def test_a_long_row_does_not_cut_the_answers_of_the_others(fresh):
    """A row whose prompt leaves only a few tokens of the context shares a call with a short one: the short row still
    gets its whole max_new_tokens, and what is cached for it is its own full answer. Catches one answer budget for the
    whole batch (the longest row's), which cut the others short and cached the cut answers."""
    context = chat.context_length(fresh.mllm)
    filler = "fox " * (context - 200)
    long_ids = len(fresh.tokenizer(literal_prompt(filler)).input_ids)
    long = filler + "fox " * (context - 4 - long_ids)  # leaves 4 tokens for its answer
    rows = [Question("Describe a red fox."), Question(long, what="message")]
    both = chat.answer(fresh.mllm, fresh.tokenizer, [], rows, max_new_tokens=30, cache=fresh.answers)
    alone = reference(fresh, literal_prompt("Describe a red fox."), max_new_tokens=30)
    assert len(fresh.tokenizer(alone).input_ids) > 4  # a real difference if the budget were shared
    assert both[0] == alone
    assert chat.answer(fresh.mllm, fresh.tokenizer, [], [Question("Describe a red fox.")], max_new_tokens=30,
                       cache=fresh.answers) == [alone]


def test_batches_split_at_the_row_and_tile_limits_give_the_same_answers(fresh, monkeypatch):
    """Six rows about four images with at most 2 rows per generate and 2 tiles per vision forward: the same answers
    and the same progress total as one batch. Catches a lost or repeated chunk, a wrong offset in the progress, or
    image features assigned to the wrong image across vision batches."""
    images = [u8_image(448, 448, seed=s) for s in range(4)]
    rows = [Question("What?", i) for i in range(4)] + [Question("Where?", 1), Question("Describe a red fox.")]
    whole, seen = chat.answer(fresh.mllm, fresh.tokenizer, images, rows, max_new_tokens=5, max_tiles=1), []
    monkeypatch.setattr(chat, "MAX_CHAT_ROWS", 2)
    monkeypatch.setattr(chat, "MAX_VISION_TILES", 2)
    with counting_vision_forwards(fresh) as vision:
        split = chat.answer(fresh.mllm, fresh.tokenizer, images, rows, max_new_tokens=5, max_tiles=1,
                            progress=lambda i, n: seen.append((i, n)))
    assert split == whole and vision[0] == 2
    assert seen[-1] == (30, 30) and [i for i, _ in seen] == sorted(i for i, _ in seen)


def test_sampled_rows_about_different_images_draw_different_noise(fresh):
    """Two rows of one sampled call get generators seeded from the seed, their image and their question. Catches one
    generator seed for every row (rows of one batch would share their draws: near-identical images, near-identical
    captions)."""
    a, b = chat.image_key(u8_image(8, 8, seed=1)), chat.image_key(u8_image(8, 8, seed=2))
    seeds = {chat.row_seed(7, a, "What?"), chat.row_seed(7, b, "What?"), chat.row_seed(7, a, "Where?"),
             chat.row_seed(8, a, "What?"), chat.row_seed(7, None, "What?")}
    assert len(seeds) == 5 and all(0 <= x < 2**63 for x in seeds)
    assert chat.row_seed(7, a, "What?") == chat.row_seed(7, a, "What?")


def test_cli_caption_and_chat_rerun_an_fp16_overflow_in_fp32(tiny, tmp_path):
    """InternVL3 files whose LLM overflows fp16 (two MLP weights ×1e4, as in test_core_precision): the caption and
    chat verbs at --dtype fp16 re-run in fp32 with the one log line, instead of printing an answer of inf/NaN logits.
    Catches the command line calling the chat functions without the engine's inf/NaN check and recovery."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "InternVL3-overflows-fp16"
    shutil.copytree(tiny.mllm_original, folder)
    weights = load_file(str(folder / "model.safetensors"))
    for key in ("layers.0.mlp.up_proj.weight", "layers.0.mlp.down_proj.weight"):
        weights[f"language_model.model.{key}"] = weights[f"language_model.model.{key}"].float() * 1e4
    save_file(weights, str(folder / "model.safetensors"))
    image = tmp_path / "im.png"
    u8_image(64, 64, seed=5).save(image)
    base = [sys.executable, "-m", "openuni_core"]
    common = ["--mllm", str(folder), "--dtype", "fp16", "--device", "cpu", "--max-new-tokens", "4"]
    for verb in (["caption", "--image", str(image)], ["chat", "--message", "Describe a red fox."]):
        r = subprocess.run(base + verb + common, capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "in fp16 (an overflow); running InternVL3 in fp32 from now on." in r.stderr, r.stderr
