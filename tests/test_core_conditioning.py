"""Query conditioning: the prompt template, the query handling and the connector, against independent math."""

import torch

from openuni_core import conditioning
from probes import counting_llm_forwards
from openuni_core.internvl import IMG_CONTEXT


def test_prompt_template():
    assert conditioning.generation_text("  a fox ") == "Generate an image: a fox"
    assert conditioning.negative_text("") == "Generate an image."
    assert conditioning.negative_text(" blurry ") == "Generate an image: blurry"
    assert conditioning.chat_prompt("X") == "<|im_start|>user\nX<|im_end|>\n<|im_start|>assistant\n<img>"


def _reference_encode(model, text):
    """Independent re-computation: full causal LM over [prompt ++ queries], then a hand-written connector. `text` is
    the whole user turn; the chat wrapping is OpenUni's published generation prompt, written out here."""
    tok = model.tokenizer
    chat = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n<img>"
    ids = torch.tensor(tok(chat, add_special_tokens=True).input_ids)
    lm = model.mllm.model.language_model
    x = torch.cat([lm.embed_tokens(ids), model.bridge.meta_queries])[None]
    h = lm(inputs_embeds=x).last_hidden_state[:, -256:]  # default positions 0..T-1, causal
    enc = model.bridge.connector
    for layer in enc.layers:
        a = layer.self_attn
        y = layer.layer_norm1(h)
        q, k, v = a.q_proj(y), a.k_proj(y), a.v_proj(y)
        heads = a.num_heads
        split = lambda t: t.view(1, -1, heads, t.shape[-1] // heads).transpose(1, 2)
        att = torch.softmax(split(q) @ split(k).transpose(-1, -2) * (q.shape[-1] // heads) ** -0.5, -1) @ split(v)
        h = h + a.out_proj(att.transpose(1, 2).reshape(1, -1, q.shape[-1]))
        y = layer.layer_norm2(h)
        h = h + layer.mlp.fc2(torch.nn.functional.gelu(layer.mlp.fc1(y), approximate="tanh"))
    return model.bridge.projector(h)


def test_encode_matches_independent_math_and_batching_is_exact(model):
    """Prompt and negative conditioning against the literal templates ("Generate an image: PROMPT"; the default
    negative "Generate an image."). Guards against a changed template (e.g. a lost ": " or the assistant turn
    without <img>), padding leaking into a batched prompt, or a wrong connector."""
    prompts = ["a red fox in the snow at dawn", "  cat "]
    batched = model.encode_prompt(prompts).embeds  # right-padded batch
    for i, p in enumerate(prompts):
        ref = _reference_encode(model, f"Generate an image: {p.strip()}")
        assert (batched[i] - ref[0]).abs().max() < 1e-4
    assert (model.encode_negative("").embeds - _reference_encode(model, "Generate an image.")).abs().max() < 1e-4
    assert (model.encode_negative("blurry").embeds - _reference_encode(model, "Generate an image: blurry")).abs().max() < 1e-4


def test_default_negative_is_computed_once_per_model(model):
    with counting_llm_forwards(model) as n:
        n1 = model.encode_negative("")
        n2 = model.encode_negative(None)
    assert torch.equal(n1.embeds, n2.embeds)
    assert n[0] <= 1
    with counting_llm_forwards(model) as n:
        model.encode_negative("")
        pos = model.encode_prompt("a tree")
        model.sample(pos, width=32, height=32, steps=1, cfg=2.0, seed=0)
        model.sample(pos, width=32, height=32, steps=1, cfg=2.0, seed=1)
    assert n[0] <= 1  # only the new prompt; negative and repeat prompt cached


def test_cfg_one_skips_the_negative_branch(model, monkeypatch):
    pos = model.encode_prompt("a lake")
    calls = []
    orig = model.transformer.forward

    def spy(x, **kw):
        calls.append(x.shape[0])
        return orig(x, **kw)

    monkeypatch.setattr(model.transformer, "forward", spy)
    model.prompts.cache.clear()
    with counting_llm_forwards(model) as n:
        pos = model.encode_prompt("a lake")
        model.sample(pos, None, width=32, height=32, steps=2, cfg=1.0, seed=0)
    assert calls == [1, 1]
    assert n[0] == 1  # no negative encoded


def test_edit_conditioning_uses_the_image(model):
    img = torch.rand(80, 120, 3)
    a = model.encode_edit(img, "make it blue").embeds
    b = model.encode_edit(torch.rand(80, 120, 3), "make it blue").embeds
    c = model.encode_edit(img, "make it red").embeds
    assert a.shape == (1, 256, 2304)
    assert (a - b).abs().max() > 1e-6 and (a - c).abs().max() > 1e-6


def test_edit_prompt_holds_256_image_tokens(model):
    text = conditioning.edit_text("do it")
    ids = model.tokenizer(conditioning.chat_prompt(text)).input_ids
    assert ids.count(model.tokenizer.convert_tokens_to_ids(IMG_CONTEXT)) == 256


def test_encode_pair_is_one_llm_batch_and_equals_separate_encodes(tiny):
    from openuni_core.loading import load_openuni

    m = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    with counting_llm_forwards(m) as n:
        pos, neg = m.encode_pair("a blue house", "blurry")
    assert n[0] == 1 and neg.texts == ["Generate an image: blurry"]
    m.prompts.cache.clear()
    assert (m.encode_prompt("a blue house").embeds - pos.embeds).abs().max() < 1e-5
    assert (m.encode_negative("blurry").embeds - neg.embeds).abs().max() < 1e-5
    with counting_llm_forwards(m) as n:
        m.encode_pair("a blue house", "blurry")
    assert n[0] == 0  # repeat: zero LLM forwards
