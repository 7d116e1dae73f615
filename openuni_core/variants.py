"""The OpenUni variants and how to tell which one a set of files belongs to.

A variant is recognised structurally — by the LLM width of the checkpoint's meta queries and by the
SANA transformer's config — so the same rules identify real downloads and the tiny test models.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import OpenUniError

NUM_QUERIES = 256
DCAE_REPO = "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"
OPENUNI_REPO = "wusize/openuni"


@dataclass(frozen=True)
class Variant:
    name: str
    llm_hidden: int  # Qwen2.5 width of the InternVL3 language model
    mllm_repo: str  # original-format InternVL3 repo (what OpenUni was trained on)
    sana_repo: str
    sana_hidden: int  # num_attention_heads * attention_head_dim of the SANA transformer
    sana_layers: int
    sample_size: int  # SANA latent side; pixels = 32 * sample_size
    connector_heads: int
    checkpoints: tuple[str, ...] = ()
    test_only: bool = False

    @property
    def pixels(self) -> int:
        return 32 * self.sample_size

    @property
    def sana_label(self) -> str:
        return self.sana_repo.split("/")[-1]


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "OpenUni-B-512", 896, "OpenGVLab/InternVL3-1B", "Efficient-Large-Model/Sana_600M_512px_diffusers",
            1152, 28, 16, 14,
            ("openuni_b_internvl3_1b_sana_0_6b_512_hf_text2image23m.pth",
             "openuni_b_internvl3_1b_sana_0_6b_512_hf_blip3o60k.pth"),
        ),
        Variant(
            "OpenUni-L-512", 1536, "OpenGVLab/InternVL3-2B", "Efficient-Large-Model/Sana_1600M_512px_diffusers",
            2240, 20, 16, 24,
            ("openuni_l_internvl3_2b_sana_1_6b_512_hf_text2image23m.pth",
             "openuni_l_internvl3_2b_sana_1_6b_512_hf_blip3o60k.pth"),
        ),
        Variant(
            "OpenUni-L-1024", 1536, "OpenGVLab/InternVL3-2B", "Efficient-Large-Model/SANA1.5_1.6B_1024px_diffusers",
            2240, 20, 32, 24,
            ("openuni_l_internvl3_2b_sana_1_6b_1024_hf_text2image23m.pth",
             "openuni_l_internvl3_2b_sana_1_6b_1024_hf_blip3o60k.pth"),
        ),
        # Tiny random models written by openuni_core.tiny for tests and the offline demo.
        Variant("tiny-B", 32, "(tiny test model)", "(tiny test model)", 32, 2, 8, 4, test_only=True),
        Variant("tiny-L", 48, "(tiny test model)", "(tiny test model)", 48, 2, 16, 4, test_only=True),
    )
}


def variants_for_llm(llm_hidden: int) -> list[Variant]:
    return [v for v in VARIANTS.values() if v.llm_hidden == llm_hidden]


def sana_signature(sana_config: dict) -> tuple[int, int, int]:
    hidden = int(sana_config["num_attention_heads"]) * int(sana_config["attention_head_dim"])
    return hidden, int(sana_config["num_layers"]), int(sana_config["sample_size"])


def identify_variant(*, checkpoint_llm_hidden: int, mllm_llm_hidden: int, sana_config: dict,
                     checkpoint_name: str = "checkpoint", mllm_name: str = "InternVL3 folder",
                     sana_name: str = "SANA folder") -> Variant:
    """Work out the variant from the three parts and insist that they belong together."""
    by_ckpt = variants_for_llm(checkpoint_llm_hidden)
    if not by_ckpt:
        raise OpenUniError(
            f"{checkpoint_name}: its meta queries are {checkpoint_llm_hidden} wide, which matches no OpenUni "
            f"variant ({', '.join(f'{v.name}: {v.llm_hidden}' for v in VARIANTS.values() if not v.test_only)}). "
            "Is this an OpenUni checkpoint?"
        )
    if mllm_llm_hidden != checkpoint_llm_hidden:
        want = by_ckpt[0]
        got = variants_for_llm(mllm_llm_hidden)
        got_label = got[0].mllm_repo if got else f"an LLM {mllm_llm_hidden} wide"
        raise OpenUniError(
            f"Mismatched models: {checkpoint_name} is an {want.name.rsplit('-', 1)[0]} checkpoint that needs "
            f"{want.mllm_repo} (LLM width {want.llm_hidden}), but {mllm_name} is {got_label} "
            f"(LLM width {mllm_llm_hidden}). Pick the InternVL3 folder that matches the checkpoint."
        )
    hidden, layers, sample = sana_signature(sana_config)
    for v in by_ckpt:
        if (v.sana_hidden, v.sana_layers, v.sample_size) == (hidden, layers, sample):
            return v
    expected = " or ".join(f"{v.sana_label} (for {v.name})" for v in by_ckpt)
    other = [v for v in VARIANTS.values() if (v.sana_hidden, v.sana_layers, v.sample_size) == (hidden, layers, sample)]
    got_label = other[0].sana_label if other else f"a SANA transformer with width {hidden}, {layers} layers, {32 * sample}px"
    raise OpenUniError(
        f"Mismatched models: {checkpoint_name} needs {expected}, but {sana_name} holds {got_label}. "
        "Pick the SANA folder that matches the checkpoint."
    )
