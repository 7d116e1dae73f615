"""DC-AE round trip and InternVL3 captioning."""

import numpy as np
import pytest
import torch
from PIL import Image

from references import reference_decode, reference_encode

from openuni_core import chat
from openuni_core.images import closest_tile_grid, tile_image, to_pil
from openuni_core.internvl import IM_END


def test_decode_encode_shapes_and_range(model):
    lat = torch.randn(2, 32, 2, 3)
    img = model.decode(lat)
    assert img.shape == (2, 64, 96, 3) and img.min() >= 0 and img.max() <= 1
    assert model.encode_images(img).shape == lat.shape


def test_vae_decode_equals_diffusers(model, reference_vae):
    """LATENT holds DC-AE's own latents: decode is AutoencoderDC.decode with no scaling, mapped from −1..1 to 0..1.
    Guards against dividing by (or multiplying with) scaling_factor in vae.decode, or a wrong value mapping."""
    lat = torch.randn(1, 32, 2, 2, generator=torch.Generator().manual_seed(0))
    assert (model.decode(lat) - reference_decode(reference_vae, lat)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("channels", [3, 4, 1])
def test_vae_encode_equals_diffusers(model, reference_vae, channels):
    """Encode is AutoencoderDC.encode(2·image − 1).latent directly (DC-AE's own latents; the scaling factor belongs
    to the sampler's side), compared with a fixed tolerance. RGBA is composited onto white and grayscale repeated
    to RGB first. Guards against `* vae.config.scaling_factor` (or a division) in vae_tiling.encode_one, a missing
    `* 2 - 1`, or alpha not composited onto white."""
    g = torch.Generator().manual_seed(channels)
    img = torch.rand(1, 64, 96, channels, generator=g)
    if channels == 4:
        rgb = img[..., :3] * img[..., 3:] + (1 - img[..., 3:])  # straight alpha over white
    else:
        rgb = img.expand(-1, -1, -1, 3)
    ours = model.encode_images(img)
    ref = reference_encode(reference_vae, rgb)
    assert ours.shape == ref.shape == (1, 32, 2, 3)
    assert (ours - ref).abs().max().item() <= 1e-4
    assert ref.abs().max() > 0.1  # a real signal, so a factor of 0.41 shows


def test_tiling_grid_follows_internvl():
    assert closest_tile_grid(448, 448, 12) == (1, 1)
    assert closest_tile_grid(1344, 448, 12) == (3, 1)
    assert closest_tile_grid(300, 600, 12) == (1, 2)
    assert closest_tile_grid(800, 1600, 12) == (2, 4)  # same aspect, enough pixels → the larger grid
    assert closest_tile_grid(4000, 1000, 6) in {(4, 1)}
    wide = tile_image(Image.new("RGB", (1600, 400)), 12)
    square = tile_image(Image.new("RGB", (448, 448)), 12)
    assert len(square) == 1 and len(wide) == 4 + 1  # 4 tiles + thumbnail
    assert all(t.size == (448, 448) for t in wide)


class ScriptedHead(torch.nn.Module):
    """Stands in for lm_head: emits a fixed token script, one token per call (independent of the LLM)."""

    def __init__(self, vocab, script):
        super().__init__()
        self.vocab, self.script, self.calls = vocab, script, 0

    def forward(self, h):
        tok = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        out = torch.full((*h.shape[:-1], self.vocab), -1e4, dtype=h.dtype)
        out[..., tok] = 0.0
        return out


def test_greedy_caption_stops_at_im_end(model):
    tok = model.tokenizer
    words = tok("a fox", add_special_tokens=False).input_ids
    im_end = tok.convert_tokens_to_ids(IM_END)
    after = tok("never", add_special_tokens=False).input_ids
    head = ScriptedHead(model.mllm.config.text_config.vocab_size, words + [im_end] + after)
    original = model.mllm.lm_head
    model.mllm.lm_head = head
    progress = []
    try:
        text = model.caption(torch.rand(64, 64, 3), "What is it?", max_new_tokens=20,
                             progress=lambda i, n: progress.append(i))
    finally:
        model.mllm.lm_head = original
    assert text == "a fox"
    assert head.calls == len(words) + 1
    assert progress and progress[-1] <= len(words) + 1


def test_greedy_caption_is_deterministic_and_tiles_matter(model):
    img = torch.rand(120, 480, 3)
    a = model.caption(img, max_new_tokens=8)
    b = model.caption(img, max_new_tokens=8)
    assert a == b
    seen = {}
    orig = model.mllm.model.get_image_features

    def spy(pixel_values, **kw):
        seen["tiles"] = pixel_values.shape[0]
        return orig(pixel_values=pixel_values, **kw)

    model.mllm.model.get_image_features = spy
    try:
        model.caption(img, max_new_tokens=2, max_tiles=6)
        wide = seen["tiles"]
        model.caption(torch.rand(448, 448, 3), max_new_tokens=2, max_tiles=6)
        square = seen["tiles"]
    finally:
        del model.mllm.model.get_image_features
    assert square == 1 and wide > square


# InternVL3's published chat format and system message (its conversation template), written out here.
INTERNVL3_SYSTEM = ("你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。")
QUESTION = "Describe the image."


def _image_448(seed: int) -> Image.Image:
    """One 448×448 RGB image: exactly one InternVL tile (no thumbnail, no resize)."""
    return Image.fromarray((np.random.RandomState(seed).rand(448, 448, 3) * 255).astype("uint8"))


def _reference_caption(model, image: Image.Image, max_new_tokens: int, logits_processor=None, **sampling) -> str:
    """transformers' own `generate` on the same InternVL3 weights, with the prompt and pixels written here: the
    literal chat template with 256 <IMG_CONTEXT> tokens for the one tile, ImageNet-normalised pixels, stopping
    at <|im_end|>, special tokens dropped from the answer."""
    from transformers import GenerationConfig

    text = (f"<|im_start|>system\n{INTERNVL3_SYSTEM}<|im_end|>\n<|im_start|>user\n<img>{'<IMG_CONTEXT>' * 256}</img>\n"
            f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    tok = model.tokenizer
    ids = torch.tensor([tok(text).input_ids])
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    pixels = ((x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None])
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    sampling = {"top_k": None, "top_p": None, **sampling}
    config = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=im_end, pad_token_id=im_end, **sampling)
    with torch.no_grad():
        out = model.mllm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels[None],
                                  generation_config=config, logits_processor=logits_processor)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def captioner(tiny):
    """A fresh tiny model with noise added to its LM head. The random tiny LM's greedy answer is otherwise newlines
    only, which strip to an empty caption that proves nothing; engine and reference share these weights."""
    from openuni_core.loading import load_openuni

    m = load_openuni(tiny.checkpoint, tiny.mllm_original, tiny.sana, tiny.vae, dtype="fp32", device="cpu")
    with torch.no_grad():
        head = m.mllm.lm_head.weight
        head.add_(0.5 * torch.randn(head.shape, generator=torch.Generator().manual_seed(0)))
    return m


def test_greedy_caption_equals_transformers_generate(captioner):
    """temperature 0 decodes greedily: the answer equals transformers' greedy generate on the same weights.
    Guards against always sampling (`do_sample=sample` → `do_sample=True`), a changed chat template or system
    message, wrong pixel normalisation, or the answer cut at the wrong place."""
    image = _image_448(0)
    ref = _reference_caption(captioner, image, 12, do_sample=False)
    assert ref  # a real answer, not an empty string
    assert captioner.caption(image, QUESTION, max_new_tokens=12, temperature=0.0, seed=5) == ref


class _GumbelFromSeed:
    """The published Gumbel-max trick, written here: argmax(scores + G) with G = -log(-log U) is a draw from
    softmax(scores). U: one uniform row per generated token from a torch generator seeded with `seed` (the engine's
    stated convention: each answer draws from its own generator, seeded by chat.row_seed)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, input_ids, scores):
        u = torch.rand(scores.shape[-1], generator=self.generator, dtype=torch.float32)
        return scores.float() - torch.log(-torch.log(u.clamp(min=torch.finfo(torch.float32).tiny)))


@pytest.mark.parametrize("temperature", [0.3, 2.0])
def test_sampled_caption_equals_transformers_top_k_sampling_at_that_temperature(captioner, temperature):
    """A temperature above 0 samples as InternVL's chat does (transformers' sampling defaults: top_k 50, top_p 1.0)
    from softmax(logits / temperature), with a generator seeded by `seed`: equal to transformers' generate with its
    own TemperatureLogitsWarper and TopKLogitsWarper and the Gumbel-max draw above. Guards against ignoring
    `temperature` (sampling at 1.0, or greedy), dropping the top-k cut or ignoring the seed."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper

    from openuni_core.chat import image_key, row_seed

    image = _image_448(1)
    for seed in (1, 2):
        generator_seed = row_seed(seed, image_key(image), QUESTION)  # the answer's own seed (tested in test_core_chat)
        draw = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopKLogitsWarper(50),
                                    _GumbelFromSeed(generator_seed)])
        ref = _reference_caption(captioner, image, 12, do_sample=False, logits_processor=draw)
        assert captioner.caption(image, QUESTION, max_new_tokens=12, temperature=temperature, seed=seed) == ref


def test_sampled_caption_same_seed_same_text_other_seed_other_text(captioner):
    """At temperature 1 the tiny LM's next-token distribution is nearly flat over ~400 tokens, so 12 tokens from
    different seeds differ with near certainty. Guards against ignoring `seed` (e.g. `torch.manual_seed(0)`)
    and against always decoding greedily (`sample = False`)."""
    image = _image_448(2)
    texts = [captioner.caption(image, QUESTION, max_new_tokens=12, temperature=1.0, seed=s) for s in (1, 1, 2, 3)]
    assert texts[0] == texts[1]
    assert len(set(texts[1:])) == 3, texts
    assert captioner.caption(image, QUESTION, max_new_tokens=12) not in texts


def test_conversation_format():
    q = chat.conversation("Q?", 2)
    assert q.startswith("<|im_start|>system\n你是书生·万象")
    assert q.count("<IMG_CONTEXT>") == 512
    assert q.endswith("<img>" + "<IMG_CONTEXT>" * 512 + "</img>\nQ?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P", "I;16"])
def test_images_with_alpha_or_gray_are_accepted(mode):
    im = Image.new(mode, (20, 10))
    assert to_pil(im).mode == "RGB"
    t = torch.rand(10, 20, 4)
    assert to_pil(t).size == (20, 10)
    assert to_pil(torch.rand(10, 20, 1)).mode == "RGB"
