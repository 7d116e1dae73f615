"""Offloaded parts run with their weights streamed from CPU RAM (openuni_core/streaming.py).

There is no accelerator here, so the compute device is the CPU. The mechanism is the same: between
their forwards, the streamed layers hold empty placeholders, so any code that reads a weight outside its
own module's forward fails here exactly as it would on a GPU.
"""

import pytest
import torch
from torch import nn

from openuni_core.loading import load_openuni
from openuni_core.streaming import largest_layer_bytes, weights_on
from probes import counting_llm_forwards

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def offloaded(tiny):
    """A second copy of the tiny model whose every part counts as offloaded (the 'sequential' policy)."""
    m = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    m.placement.offloaded = lambda part: True
    return m


def _snapshot(module: nn.Module):
    return {n: (p, p.data_ptr(), p.shape) for n, p in module.named_parameters()}, dict(module.named_buffers())


def test_streamed_encoding_equals_resident_encoding(model, offloaded):
    before = _snapshot(offloaded.mllm)
    with counting_llm_forwards(offloaded) as n:
        for prompts in (["a fox in the snow", "a red bicycle"], ["a lighthouse at dusk"]):
            assert torch.equal(offloaded.encode_prompt(prompts).embeds, model.encode_prompt(prompts).embeds)
        img = torch.rand(40, 56, 3)
        assert torch.equal(offloaded.encode_edit(img, "make it blue").embeds,
                           model.encode_edit(img, "make it blue").embeds)
    assert n[0] == 3
    # Afterwards every parameter is the same object on the same CPU storage; buffers are back too.
    params, buffers = _snapshot(offloaded.mllm)
    assert {n: (id(p), ptr, s) for n, (p, ptr, s) in params.items()} == \
        {n: (id(p), ptr, s) for n, (p, ptr, s) in before[0].items()}
    assert all(buffers[n] is b for n, b in before[1].items())


def test_streamed_encoding_holds_one_layer_at_a_time(offloaded):
    mllm = offloaded.mllm
    tables = offloaded.embedding_tables()
    table_params = [p for t in tables for p in t.parameters()]
    streamed = [p for p in mllm.parameters() if not any(p is q for q in table_params)]
    total = sum(p.numel() * p.element_size() for p in mllm.parameters())
    seen = {"peak": 0, "forwards": 0, "tables_resident": True}

    def measure(module, args, output):  # global hooks run before the module's own, so it still has its weights
        seen["peak"] = max(seen["peak"], sum(p.numel() * p.element_size() for p in streamed))  # placeholders: 0
        seen["tables_resident"] &= all(p.numel() > 0 for p in table_params)
        seen["forwards"] += 1

    handle = torch.nn.modules.module.register_module_forward_hook(measure)
    try:
        offloaded.encode_prompt("a streamed prompt nobody encoded before")
    finally:
        handle.remove()
    assert seen["forwards"] > 10
    # A module's hook sees its parent's weights (a layer owning parameters next to its children) at most.
    layer = largest_layer_bytes(mllm, tables)
    assert 0 < seen["peak"] <= 2 * layer < total / 2, seen
    # The embedding tables never leave the CPU: the prompt's rows are looked up there.
    assert seen["tables_resident"]


def test_streaming_under_inference_mode_as_comfyui_runs_it(model, offloaded):
    before = _snapshot(offloaded.mllm)[0]
    with torch.inference_mode():
        got = offloaded.encode_prompt("an inference-mode prompt").embeds
        want = model.encode_prompt("an inference-mode prompt").embeds
    assert torch.equal(got, want)
    after = _snapshot(offloaded.mllm)[0]
    assert all(after[n][0] is p and after[n][1] == ptr for n, (p, ptr, _) in before.items())
    assert not any(p.is_inference() for p in offloaded.mllm.parameters())


def test_offloaded_sampling_decoding_and_captioning_equal_resident(model, offloaded):
    kw = dict(width=64, height=64, steps=3, cfg=4.0, seed=11)
    pos, neg = model.encode_pair("a harbour")
    lat = model.sample(pos, neg, **kw)
    assert offloaded.model_id == model.model_id  # same files, so conditioning moves between the two
    assert torch.equal(offloaded.sample(pos, neg, **kw), lat)
    assert torch.equal(offloaded.decode(lat), model.decode(lat))
    img = torch.rand(64, 64, 3)
    assert offloaded.caption(img, max_new_tokens=6) == model.caption(img, max_new_tokens=6)


def test_weights_come_back_after_an_error_inside_the_block():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    before = _snapshot(net)
    with pytest.raises(RuntimeError, match="boom"):
        with weights_on(CPU, per_layer=[net]):
            net(torch.randn(1, 4))
            raise RuntimeError("boom")
    assert {n: (ptr, s) for n, (_, ptr, s) in _snapshot(net)[0].items()} == \
        {n: (ptr, s) for n, (_, ptr, s) in before[0].items()}


def test_reading_a_weight_outside_its_layer_fails_loudly():
    class Sneaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x):
            return nn.functional.linear(x, self.proj.weight)  # the child's weight, without calling the child

    net = Sneaky()
    x = torch.randn(2, 4)
    expected = net(x)
    with weights_on(CPU, whole=[net]):
        assert torch.equal(net(x), expected)
    with weights_on(CPU, per_layer=[net]), pytest.raises(RuntimeError):
        net(x)


def test_tied_weights_stay_tied():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    net = nn.ModuleDict({"emb": emb, "head": head})
    ids = torch.tensor([[1, 2, 3]])
    expected = head(emb(ids))
    with weights_on(CPU, per_layer=[net]):
        assert torch.equal(net["head"](net["emb"](ids)), expected)  # each owner fetches the shared weight
    with weights_on(CPU, per_layer=[net], on_host=[emb]):
        assert emb.weight.shape == (10, 4)  # kept where it is, though the streamed head shares it
        assert torch.equal(net["head"](net["emb"](ids)), expected)
    assert head.weight is emb.weight and head.weight.shape == (10, 4)
