"""OpenUni Chat, OpenUni Prompt Enhance and OpenUni Caption's presets, called the way ComfyUI calls them, on a model
from OpenUni Model Loader (tiny files from disk; tests/test_nodes.py's environment: no ComfyUI needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from comfy_pack import InterruptProcessingException  # noqa: E402
from test_nodes import env, fake, model  # noqa: E402,F401  (the shared node environment's fixtures)

SAMPLED = dict(max_tiles=2, max_new_tokens=6, temperature=1.0, seed=3)  # the tiny LLM's greedy answers are empty


def spoken(env, monkeypatch) -> list[str]:
    """Records every message the engine puts into InternVL3's conversation."""
    chat = sys.modules["openuni_pack.openuni_core.chat"]
    seen, original = [], chat.conversation
    monkeypatch.setattr(chat, "conversation",
                        lambda message, *a, **k: seen.append(message) or original(message, *a, **k))
    return seen


def quoted(text: str, after: str) -> str:
    """The text between single quotes that follows `after` in a tooltip."""
    start = text.index(after + "'") + len(after) + 1
    return text[start:text.index("'", start)]


def test_chat_with_an_image_answers_like_caption_and_without_one_gives_one_answer(env, model, fake):
    """Catches: the chat node ignoring its image, a different conversation than captioning's, a text-only chat that
    still sends an image line (its answer would differ from the engine's text-only chat)."""
    images = torch.rand(2, 48, 64, 3)
    chat = env.call("OpenUniChat", model=model, message="What is in the picture?", system_prompt="", image=images,
                    **SAMPLED)
    caption = env.call("OpenUniCaption", model=model, image=images, question="What is in the picture?", **SAMPLED)
    assert chat["result"] == caption["result"] and len(chat["result"][0]) == 2
    assert chat["ui"]["text"] == chat["result"][0] and all(chat["result"][0])
    fake.progress.clear()
    text_only = env.call("OpenUniChat", model=model, message="Hello there", system_prompt="", **SAMPLED)
    assert text_only["result"][0] == model.chat("Hello there", **SAMPLED)
    assert fake.progress[-1] == (6, 6)
    for name in ("OpenUniChat", "OpenUniPromptEnhance"):
        cls = env.pack.NODE_CLASS_MAPPINGS[name]
        assert cls.OUTPUT_IS_LIST == (True,) and cls.OUTPUT_NODE is True and "image" in cls.INPUT_TYPES()["optional"]


def test_system_prompt_reaches_the_model(env, model, monkeypatch):
    """Catches: the node dropping or not stripping its system prompt."""
    chat = sys.modules["openuni_pack.openuni_core.chat"]
    systems = []
    original = chat.conversation
    monkeypatch.setattr(chat, "conversation", lambda m, tiles=0, system=None: systems.append(system) or
                        original(m, tiles, system))
    env.call("OpenUniChat", model=model, message="Hi", system_prompt="  Answer in French. ", **SAMPLED)
    assert systems == ["Answer in French."]


def test_presets_ask_the_questions_their_tooltip_states(env, model, monkeypatch):
    """Catches: a preset asking something else than its tooltip says, presets that still read the question box,
    the custom preset not splitting lines."""
    cls = env.pack.NODE_CLASS_MAPPINGS["OpenUniCaption"]
    kind, opts = cls.INPUT_TYPES()["optional"]["preset"]
    assert opts["default"] == "custom question" and "custom question" in kind
    seen = spoken(env, monkeypatch)
    image = torch.rand(1, 40, 40, 3)
    for preset in kind:
        seen.clear()
        out = env.call("OpenUniCaption", model=model, image=image, question="Ignored?\nAlso ignored?", preset=preset,
                       **SAMPLED)
        if preset == "custom question":
            assert seen == ["Ignored?", "Also ignored?"] and len(out["result"][0]) == 2
        else:
            assert seen == [quoted(opts["tooltip"], f"{preset}: ")] and len(out["result"][0]) == 1


def test_saved_caption_workflows_from_before_presets_still_load(env, model):
    """UI workflows store widget values by position and API prompts may lack the new input. Catches: preset made
    required (old API prompts fail validation) or placed before the old widgets (their values would shift)."""
    spec = env.pack.NODE_CLASS_MAPPINGS["OpenUniCaption"].INPUT_TYPES()
    old_widgets = ["question", "max_tiles", "max_new_tokens", "temperature", "seed"]
    assert list(spec["required"]) == ["model", "image", *old_widgets]
    assert list(spec["optional"]) == ["preset"]
    image = torch.rand(1, 40, 40, 3)
    old = env.call("OpenUniCaption", model=model, image=image, question="What?\nWhere?", **SAMPLED)
    assert old["result"][0] == model.captions(image, "What?\nWhere?", **SAMPLED)


def test_enhance_asks_the_instruction_its_tooltip_quotes_and_feeds_text_encode_and_sampling(env, model, monkeypatch):
    """Short idea → OpenUni Prompt Enhance → OpenUni Text Encode → Sampler → VAE Decode, through the nodes.
    Catches: the tooltip misquoting the instruction, the idea not reaching the model, an output Text Encode
    cannot take."""
    cls = env.pack.NODE_CLASS_MAPPINGS["OpenUniPromptEnhance"]
    instruction = quoted(cls.INPUT_TYPES()["required"]["prompt"][1]["tooltip"], "The model is asked: ")
    seen = spoken(env, monkeypatch)
    out = env.call("OpenUniPromptEnhance", model=model, prompt="a fox in the snow", **SAMPLED)
    assert seen == [f"{instruction}\n\nIdea: a fox in the snow"]
    (prompts,) = out["result"]
    assert len(prompts) == 1 and prompts[0] and out["ui"]["text"] == prompts
    pos, neg = env.call("OpenUniTextEncode", model=model, prompt=prompts[0], negative_prompt="")
    assert pos[0][0].shape == (1, 256, 2304)
    (latent,) = env.call("OpenUniSampler", model=model, positive=pos, negative=neg, seed=1, steps=2, cfg=4.5,
                         sampler="dpmpp", width=64, height=64, batch_size=1)
    (image,) = env.call("OpenUniVAEDecode", model=model, latent=latent, tiling="auto")
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()
    with_image = env.call("OpenUniPromptEnhance", model=model, prompt="a fox", image=torch.rand(2, 32, 32, 3),
                          **SAMPLED)
    assert len(with_image["result"][0]) == 2


def test_stop_mid_chat_then_rerun_equals_uninterrupted(env, model, fake):
    """Catches: Stop not reaching the batched generate, or state left behind that changes the next run."""
    args = dict(model=model, message="Tell me a story.", system_prompt="", image=torch.rand(2, 32, 32, 3),
                **dict(SAMPLED, max_new_tokens=20))
    expected = env.call("OpenUniChat", **args)["result"]
    fake.interrupt_checks, fake.interrupt_after = 0, 3
    with pytest.raises(InterruptProcessingException):
        env.call("OpenUniChat", **args)
    assert env.call("OpenUniChat", **args)["result"] == expected


@pytest.mark.parametrize("node, inputs, message", [
    ("OpenUniChat", dict(message="", system_prompt=""), "The message is empty"),
    ("OpenUniChat", dict(message="a <|im_end|>", system_prompt=""), "control tokens"),
    ("OpenUniChat", dict(message="fox " * 9000, system_prompt=""), r"The message is \d+ tokens long"),
    ("OpenUniChat", dict(message=["a"], system_prompt=""), "The message input must be text"),
    ("OpenUniPromptEnhance", dict(prompt=" "), "The prompt is empty"),
    ("OpenUniCaption", dict(image=torch.rand(1, 8, 8, 3), question="?", preset="haiku"), "Unknown caption preset"),
])
def test_bad_input_gets_one_clear_line(env, model, node, inputs, message):
    """Catches: a node that lets a bad input reach the model, or turns the engine's message into another error."""
    from openuni_pack.openuni_core.errors import OpenUniError

    with pytest.raises(OpenUniError, match=message):
        env.call(node, model=model, **{**SAMPLED, **inputs})


def test_readme_quotes_what_the_presets_and_the_enhancer_ask(env):
    """README, tooltips and engine agree. Catches: a preset question or the enhance instruction reworded in one place."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    kind, opts = env.pack.NODE_CLASS_MAPPINGS["OpenUniCaption"].INPUT_TYPES()["optional"]["preset"]
    for preset in kind:
        if preset != "custom question":
            assert f"| {preset} | {quoted(opts['tooltip'], f'{preset}: ')} |" in readme, preset
    enhance = env.pack.NODE_CLASS_MAPPINGS["OpenUniPromptEnhance"].INPUT_TYPES()
    row = next(line for line in readme.splitlines() if line.startswith("| Prompt Enhance |"))
    assert f"| Prompt Enhance | {quoted(enhance['required']['prompt'][1]['tooltip'], 'The model is asked: ')}" in row
    assert quoted(enhance["optional"]["image"][1]["tooltip"], "the instruction then adds ") in row
