"""The OpenUni variants and how to tell which architecture a set of files has.

The architecture is read from the files themselves: the LLM width from the checkpoint's meta queries and the
MLLM's config, the connector's width, MLP size and layer count from its weights, the projector's output from
its shape (= SANA's caption_channels), SANA's width, depth and pixels from its config. The table below only names
the released variants (and the tiny test ones) — for folder defaults, downloads and presets; a consistent set of
other widths (a fine-tune on another InternVL3 or SANA) loads as a custom OpenUni.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import OpenUniError

NUM_QUERIES = 256
# The connector's attention heads do not show in its weights. OpenUni's connectors use 64-wide heads (upstream
# configs: OpenUni-B 896 wide / 14 heads, OpenUni-L 1536 / 24), so that is the rule for widths the table lacks,
# unless the checkpoint says otherwise (checkpoint.CONFIG_KEY: {"connector": {"num_attention_heads": N}}).
HEAD_DIM = 64
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
    custom: bool = False  # identified from the files; not a row of VARIANTS

    @property
    def pixels(self) -> int:
        return 32 * self.sample_size

    @property
    def sana_label(self) -> str:
        return self.sana_repo.split("/")[-1]

    def describe(self, connector: tuple[int, int, int]) -> str:
        hidden, mlp, layers = connector
        return (f"LLM {self.llm_hidden} wide, connector {layers}×{hidden} (MLP {mlp}, {self.connector_heads} "
                f"head{'s' * (self.connector_heads != 1)}), "
                f"SANA {self.sana_hidden} wide × {self.sana_layers} layers, {self.pixels} px")


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
                     connector: tuple[int, int, int] | None = None, checkpoint_config: dict | None = None,
                     checkpoint_name: str = "checkpoint", mllm_name: str = "InternVL3 folder",
                     sana_name: str = "SANA folder") -> Variant:
    """The variant of a set of parts, insisting that they fit each other (OpenUniError naming both shapes if not).

    A released (or tiny test) variant when the LLM width and SANA's shape match a row of VARIANTS; a custom one,
    read from the files, for any other consistent set. connector: (width, MLP size, layers) of the checkpoint's
    connector; checkpoint_config: its CONFIG_KEY entry (may name the connector's heads).
    """
    width = checkpoint_llm_hidden
    by_ckpt = variants_for_llm(width)
    if mllm_llm_hidden != width:
        want = (f"is an {by_ckpt[0].name.rsplit('-', 1)[0]} checkpoint that needs {by_ckpt[0].mllm_repo}" if by_ckpt
                else "needs an InternVL3")
        got = [v for v in variants_for_llm(mllm_llm_hidden) if not v.test_only]
        got_label = f"{got[0].mllm_repo} " if got else "an InternVL3 "
        raise OpenUniError(
            f"Mismatched models: {checkpoint_name} {want} (LLM width {width}: its meta queries are [{NUM_QUERIES}, "
            f"{width}]), but {mllm_name} is {got_label}(LLM width {mllm_llm_hidden}). Pick the InternVL3 folder that "
            "matches the checkpoint.")
    connector = connector or (width, 0, 0)
    if connector[0] != width:
        raise OpenUniError(f"{checkpoint_name} does not fit together: its connector is {connector[0]} wide but its meta "
                           f"queries are {width} wide (the LLM's width). The file is damaged or not an OpenUni "
                           "checkpoint.")
    hidden, layers, sample = signature = sana_signature(sana_config)
    for v in by_ckpt:
        if (v.sana_hidden, v.sana_layers, v.sample_size) == signature:
            return v
    other = [v for v in VARIANTS.values() if (v.sana_hidden, v.sana_layers, v.sample_size) == signature]
    if by_ckpt and other:  # a released checkpoint with the SANA of another released variant: a mix-up
        expected = " or ".join(f"{v.sana_label} (for {v.name})" for v in by_ckpt)
        raise OpenUniError(
            f"Mismatched models: {checkpoint_name} needs {expected}, but {sana_name} holds {other[0].sana_label}. "
            "Pick the SANA folder that matches the checkpoint.")
    return Variant("custom OpenUni", width, f"the InternVL3 it was trained on (LLM {width} wide)",
                   "the SANA it was trained on", hidden, layers, sample,
                   _connector_heads(width, checkpoint_config or {}, checkpoint_name), custom=True)


def _connector_heads(width: int, config: dict, checkpoint_name: str) -> int:
    """Heads: the checkpoint's own word, else a table row of this LLM width, else HEAD_DIM-wide heads."""
    heads = (config.get("connector") or {}).get("num_attention_heads")
    if heads is not None:
        if not isinstance(heads, int) or heads < 1 or width % heads:
            raise OpenUniError(f"{checkpoint_name}: its connector num_attention_heads {heads!r} does not divide its "
                               f"width {width}.")
        return heads
    rows = variants_for_llm(width)
    if rows:
        return rows[0].connector_heads
    if width % HEAD_DIM == 0:
        return width // HEAD_DIM
    raise OpenUniError(
        f"{checkpoint_name}: its connector is {width} wide, not a multiple of OpenUni's {HEAD_DIM}-wide attention "
        "heads, and the file does not say how many heads it has. Save the count with the weights: in a .pth, "
        '{"openuni_config": {"connector": {"num_attention_heads": N}}, ...weights}; in a .safetensors, that JSON as '
        "the metadata entry openuni_config.")
