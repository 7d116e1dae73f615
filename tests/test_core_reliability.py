"""Faults survived: out-of-memory, interrupts, long runs, odd prompts and images, property-based inputs."""

import os

import psutil
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st
from PIL import Image

from openuni_core.errors import OpenUniError
from references import may_hold_control_token, valid_caption, valid_sampling


def _oom():
    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)("CUDA out of memory. Tried to allocate 2 GiB")


@pytest.mark.parametrize("where", ["transformer", "vae"])
def test_out_of_memory_is_explained_and_model_stays_usable(model, monkeypatch, where):
    pos = model.encode_prompt("oom test")
    target = model.transformer if where == "transformer" else model.vae
    name = "forward" if where == "transformer" else "decode"
    original = getattr(target, name)
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise _oom()
        return original(*a, **k)

    monkeypatch.setattr(target, name, flaky)
    with pytest.raises(OpenUniError, match=r"Out of memory while .*offload.*smaller width/height"):
        model.decode(model.sample(pos, width=64, height=64, steps=2, cfg=2.0, seed=0))
    img = model.decode(model.sample(pos, width=64, height=64, steps=2, cfg=2.0, seed=0))
    assert img.shape == (1, 64, 64, 3)


def test_cpu_allocation_failure_counts_as_oom(model, monkeypatch):
    def fail(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(model.vae, "decode", fail)
    with pytest.raises(OpenUniError, match="Out of memory while decoding"):
        model.decode(torch.zeros(1, 32, 2, 2))


def test_other_errors_are_not_disguised(model, monkeypatch):
    monkeypatch.setattr(model.vae, "decode", lambda *a, **k: (_ for _ in ()).throw(KeyError("boom")))
    with pytest.raises(KeyError):
        model.decode(torch.zeros(1, 32, 2, 2))


def test_interrupted_caption_then_rerun_equals_uninterrupted(model):
    img = torch.rand(64, 64, 3)
    expected = model.caption(img, max_new_tokens=6, temperature=1.0, seed=3)

    class Stop(Exception):
        pass

    n = {"i": 0}

    def interrupt():
        n["i"] += 1
        if n["i"] == 2:
            raise Stop

    with pytest.raises(Stop):
        model.caption(img, max_new_tokens=6, temperature=1.0, seed=3, interrupt=interrupt)
    assert model.caption(img, max_new_tokens=6, temperature=1.0, seed=3) == expected


def test_fifty_generations_do_not_leak(model):
    proc = psutil.Process()
    pos = model.encode_prompt("a steady fox")
    neg = model.encode_negative("")
    rss, fds = {}, {}
    for i in range(1, 51):
        model.decode(model.sample(pos, neg, width=64, height=64, steps=2, cfg=3.0, seed=i))
        if i in (5, 50):
            rss[i] = proc.memory_info().rss
            fds[i] = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    assert rss[50] <= rss[5] * 1.05, (rss[5], rss[50])
    assert fds[50] <= fds[5]


@pytest.mark.parametrize("prompt", ["ünïcödé 猫 🦊", "tab\tnew\nline", "nul\x00bell\x07esc\x1b[31m",
                                    "\u202eright-to-left override", "a" * 2000])
def test_odd_prompts_are_accepted(model, prompt):
    cond = model.encode_prompt(prompt)
    assert cond.embeds.shape == (1, 256, 2304) and torch.isfinite(cond.embeds).all()
    assert "\x00" not in cond.texts[0] and "\x1b" not in cond.texts[0]


@pytest.mark.parametrize("prompt", ["", "   ", "\t\n", "\x00\x07\x1b"])
def test_empty_prompts_are_refused_and_empty_negatives_mean_the_default(model, prompt, monkeypatch):
    """An empty prompt (blank, or nothing left once control characters are removed) is refused before the LLM runs,
    in encode_prompt, encode_pair and the edit path alike; an empty negative is the model's default. Catches
    PromptRules' empty check removed (the prompt would be drawn as an unguided image) or applied to negatives."""
    monkeypatch.setattr(model.prompts, "_cached", lambda *a, **k: pytest.fail("the LLM ran"))
    for run in (lambda: model.encode_prompt(prompt), lambda: model.encode_pair(["a fox", prompt]),
                lambda: model.encode_edit(torch.rand(32, 32, 3), prompt)):
        with pytest.raises(OpenUniError, match=r"The (prompt|instruction) is empty; write what to draw"):
            run()
    monkeypatch.undo()
    assert model.encode_pair("a fox", prompt)[1].texts == ["Generate an image."]


@pytest.mark.parametrize("size", [(1, 1), (3, 700), (7680, 4320)])
def test_odd_image_sizes_caption_and_edit(model, size):
    img = Image.new("RGB", size, (200, 30, 30))
    assert isinstance(model.caption(img, max_new_tokens=2, max_tiles=2), str)
    if size[0] * size[1] < 1_000_000:
        assert model.encode_edit(img, "make it blue").embeds.shape == (1, 256, 2304)


def test_edit_batch_of_mixed_sizes(model):
    cond = model.encode_edit([torch.rand(40, 90, 3), torch.rand(300, 64, 4), torch.rand(32, 32, 1)], "do it")
    assert cond.embeds.shape == (3, 256, 2304)


def test_huge_image_is_refused_before_work(model):
    class Huge:
        width, height, mode, info = 20000, 20000, "RGB", {}

    from openuni_core.images import check_size

    with pytest.raises(OpenUniError, match="Downscale"):
        check_size(Huge())


SIDES = st.sampled_from([32, 64, 96]) | st.integers(-64, 700)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(width=SIDES, height=SIDES, steps=st.integers(-2, 4), cfg=st.floats(-5, 12) | st.just(float("nan")),
       strength=st.floats(-0.5, 1.5) | st.just(float("nan")), sampler=st.sampled_from(["dpmpp", "euler", "bogus"]),
       batch=st.integers(-1, 3))
@example(width=64, height=96, steps=3, cfg=4.5, strength=1.0, sampler="dpmpp", batch=2)
@example(width=96, height=32, steps=4, cfg=0.0, strength=0.5, sampler="euler", batch=3)
@example(width=32, height=32, steps=2, cfg=1.0, strength=0.2, sampler="dpmpp", batch=1)  # denoise leaves no step
@example(width=32, height=64, steps=1, cfg=2.0, strength=1.0, sampler="euler", batch=0)
def test_sampler_inputs_property(model, width, height, steps, cfg, strength, sampler, batch):
    """Refused exactly when a setting is outside the published limits; accepted inputs give finite latents of the
    asked shape. Guards against refusing valid input (e.g. `if sampler not in SAMPLERS:` → `if True:` in
    sampling.check_settings, which a refused-is-fine test would pass) and against accepting invalid input."""
    pos = model.encode_prompt("prop")
    init = torch.zeros(1, 32, max(1, height // 32), max(1, width // 32)) if strength == strength and strength < 1 else None
    valid = valid_sampling(steps=steps, cfg=cfg, sampler=sampler, width=width, height=height, batch=batch,
                           denoise=strength if init is not None else None)
    try:
        lat = model.sample(pos, width=width, height=height, steps=steps, cfg=cfg, seed=1, sampler=sampler,
                           batch_size=batch, init_latents=init, strength=strength if init is not None else 1.0)
    except OpenUniError:
        assert not valid, "a valid input was refused"
        return
    assert valid, "an invalid input was accepted"
    assert lat.shape == (batch, 32, height // 32, width // 32) and torch.isfinite(lat).all()


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(question=st.text(max_size=40), tiles=st.integers(-1, 45), tokens=st.integers(-1, 3),
       temperature=st.floats(-1, 6) | st.just(float("nan")), seed=st.integers(0, 2**64 - 1))
@example(question="What is it?", tiles=2, tokens=3, temperature=0.0, seed=0)
@example(question="", tiles=40, tokens=1, temperature=5.0, seed=2**64 - 1)
def test_caption_inputs_property(model, question, tiles, tokens, temperature, seed):
    """Refused exactly when a setting is outside the published limits (or the question spells a control token);
    accepted inputs give a text from at most `tokens` generated tokens. Guards against refusing valid input (e.g.
    `if not isinstance(max_tiles, int) or not 1 <= max_tiles <= MAX_TILES:` → `if True:` in
    chat.check_settings)."""
    valid = valid_caption(max_tiles=tiles, max_new_tokens=tokens, temperature=temperature)
    generated = []
    try:
        out = model.caption(torch.rand(40, 60, 3), question, max_tiles=tiles, max_new_tokens=tokens,
                            temperature=temperature, seed=seed, progress=lambda i, n: generated.append(i))
    except OpenUniError:
        assert not valid or may_hold_control_token(question), "a valid input was refused"
        return
    assert valid, "an invalid input was accepted"
    assert isinstance(out, str) and 1 <= generated[-1] <= tokens


@pytest.mark.parametrize("temperature", [1e-300, 1e-6, 0.009])
def test_tiny_temperatures_fall_back_to_greedy(model, temperature):
    img = torch.rand(48, 48, 3)
    assert model.caption(img, max_new_tokens=4, temperature=temperature) == model.caption(img, max_new_tokens=4)
