"""The house rules that keep one home for each fact: node widgets offer exactly the engine's choices and limits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from comfy_pack import load_pack, unload_pack  # noqa: E402

from openuni_core import options  # noqa: E402


@pytest.fixture(scope="module")
def pack():
    mod = load_pack("openuni_house_pack")  # no ComfyUI modules needed to describe the nodes
    yield mod
    unload_pack("openuni_house_pack")


def _inputs(pack, node: str) -> dict:
    spec = pack.NODE_CLASS_MAPPINGS[node].INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


# (node, input, {option: the engine's value}); "choices" is the list a combo offers.
WIDGETS = [
    ("OpenUniSampler", "seed", {"min": 0, "max": options.SEED_MAX, "default": options.DEFAULT_SEED}),
    ("OpenUniSampler", "steps", {"min": 1, "max": options.MAX_STEPS, "default": options.DEFAULT_STEPS}),
    ("OpenUniSampler", "cfg", {"min": 0.0, "max": options.MAX_CFG, "default": options.DEFAULT_CFG}),
    ("OpenUniSampler", "sampler", {"choices": list(options.SAMPLERS), "default": options.DEFAULT_SAMPLER}),
    ("OpenUniSampler", "width", {"min": options.MIN_SIDE, "max": options.MAX_SIDE,
                                 "step": options.SPATIAL_COMPRESSION}),
    ("OpenUniSampler", "height", {"min": options.MIN_SIDE, "max": options.MAX_SIDE,
                                  "step": options.SPATIAL_COMPRESSION}),
    ("OpenUniSampler", "batch_size", {"min": 1, "max": options.MAX_BATCH}),
    ("OpenUniCaption", "max_tiles", {"min": 1, "max": options.MAX_TILES, "default": options.DEFAULT_MAX_TILES}),
    ("OpenUniCaption", "max_new_tokens", {"min": 1, "max": options.MAX_NEW_TOKENS,
                                          "default": options.DEFAULT_MAX_NEW_TOKENS}),
    ("OpenUniCaption", "temperature", {"min": 0.0, "max": options.MAX_TEMPERATURE}),
    ("OpenUniCaption", "seed", {"min": 0, "max": options.SEED_MAX}),
    ("OpenUniCaption", "question", {"default": options.DEFAULT_QUESTION}),
    ("OpenUniCaption", "preset", {"choices": list(options.CAPTION_PRESETS), "default": options.DEFAULT_CAPTION_PRESET}),
    *[(node, "max_tiles", {"min": 1, "max": options.MAX_TILES, "default": options.DEFAULT_MAX_TILES})
      for node in ("OpenUniChat", "OpenUniPromptEnhance")],
    *[(node, "temperature", {"min": 0.0, "max": options.MAX_TEMPERATURE, "default": 0.0})
      for node in ("OpenUniChat", "OpenUniPromptEnhance")],
    ("OpenUniChat", "max_new_tokens", {"min": 1, "max": options.MAX_NEW_TOKENS,
                                       "default": options.DEFAULT_MAX_NEW_TOKENS}),
    ("OpenUniPromptEnhance", "max_new_tokens", {"min": 1, "max": options.MAX_NEW_TOKENS,
                                                "default": options.DEFAULT_ENHANCE_MAX_NEW_TOKENS}),
    ("OpenUniModelLoader", "precision", {"choices": list(options.PRECISIONS)}),
    ("OpenUniModelLoader", "attention", {"choices": list(options.ATTENTION_KERNELS)}),
    ("OpenUniImageEditEncode", "negative_instruction", {"default": options.DEFAULT_EDIT_NEGATIVE}),
]


@pytest.mark.parametrize("node,name,expected", WIDGETS, ids=[f"{n}.{i}" for n, i, _ in WIDGETS])
def test_node_widgets_offer_exactly_the_engines_choices_and_limits(pack, node, name, expected):
    kind, opts = _inputs(pack, node)[name][:2]
    for key, value in expected.items():
        got = kind if key == "choices" else opts.get(key)
        assert got == value, f"{node}.{name} {key}: widget says {got!r}, the engine {value!r}"


def test_memory_choices_cover_the_engines_policies(pack):
    loader = sys.modules["openuni_house_pack.nodes.loader"]
    labels = _inputs(pack, "OpenUniModelLoader")["memory"][0]
    assert sorted({loader.MEMORY_POLICIES[label] for label in labels}) == sorted(options.MEMORY_POLICIES)
