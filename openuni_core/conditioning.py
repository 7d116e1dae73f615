"""Prompts (and images) → query conditioning [B, 256, caption_channels] (as in OpenUni, arXiv 2505.23661).

The prompt is wrapped in InternVL3's chat format, the 256 learnable meta queries are appended after
its tokens, the LLM runs causally over both, and the final-norm states of the query positions go
through the connector and projector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import compat
from .errors import OpenUniError
from .internvl import IM_END, IM_START, IMG_CONTEXT, IMG_END, IMG_START, TOKENS_PER_TILE
from .options import DEFAULT_NEGATIVE


def generation_text(prompt: str) -> str:
    return f"Generate an image: {prompt.strip()}"


def negative_text(negative: str | None) -> str:
    """Empty negative → the model's default CFG text; otherwise templated like a prompt."""
    return generation_text(negative) if negative and negative.strip() else DEFAULT_NEGATIVE


def chat_prompt(text: str) -> str:
    return f"{IM_START}user\n{text}{IM_END}\n{IM_START}assistant\n{IMG_START}"


def edit_text(instruction: str) -> str:
    return f"{IMG_START}{IMG_CONTEXT * TOKENS_PER_TILE}{IMG_END}\n{instruction.strip()}"


def clean_prompt(text) -> str:
    if not isinstance(text, str):
        raise OpenUniError(f"A prompt must be text, got {type(text).__name__}.")
    # Control characters (other than newline/tab) carry no meaning for the model and can confuse tokenizers.
    return "".join(ch for ch in text if ch in "\n\t" or ch.isprintable())


def check_user_text(tokenizer, text, what: str = "prompt") -> str:
    """Clean user text and refuse the model's own control tokens in it: typed into a prompt they would
    silently restructure the chat format (or, for <IMG_CONTEXT>, break the image slots)."""
    text = clean_prompt(text)
    reserved = [t for t in tokenizer.get_added_vocab() if t and t in text]
    if reserved:
        raise OpenUniError(f"The {what} contains {sorted(reserved)}: control tokens of the model's chat format, "
                           "which cannot be used as text. Remove them.")
    return text


@dataclass
class QueryConditioning:
    """What the sampler consumes: query embeddings plus the identity of the model that made them."""

    embeds: torch.Tensor  # [B, 256, caption_channels], float32
    model_id: str
    texts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def check_for(self, model_id: str, channels: int, what: str) -> None:
        """Raise OpenUniError unless this conditioning was made by the model `model_id` and has its width."""
        if self.model_id != model_id:
            raise OpenUniError(f"The {what} conditioning was made by a different OpenUni model than the one "
                               "sampling; encode the prompt with the same loaded model.")
        if self.embeds.ndim != 3 or self.embeds.shape[-1] != channels:
            raise OpenUniError(f"The {what} conditioning has shape {list(self.embeds.shape)}; this model needs "
                               f"[batch, 256, {channels}].")


def tokenize(tokenizer, texts: list[str]) -> list[torch.Tensor]:
    """Templated texts → token ids [n] int64 each, wrapped in InternVL3's chat format (`chat_prompt`). Lengths are
    checked by prompt_encoder.PromptRules, which knows which user text each came from (verbose=False: a
    too-long text is refused there, in the user's words; the tokenizer's own warning would only add noise)."""
    return [torch.tensor(tokenizer(chat_prompt(t), add_special_tokens=True, verbose=False).input_ids,
                         dtype=torch.long) for t in texts]


@torch.no_grad()
def run_queries(mllm, meta_queries: torch.Tensor, bridge, token_embeds: list[torch.Tensor]) -> torch.Tensor:
    """Right-pad the prompts, append the queries, run the LLM, return connector(projector) output."""
    lm = mllm.model.language_model
    n_q, width = meta_queries.shape
    longest = max(e.shape[0] for e in token_embeds)
    batch = len(token_embeds)
    device, dtype = meta_queries.device, meta_queries.dtype
    inputs = torch.zeros(batch, longest + n_q, width, device=device, dtype=dtype)
    mask = torch.zeros(batch, longest + n_q, device=device, dtype=torch.long)
    for i, e in enumerate(token_embeds):
        inputs[i, : e.shape[0]] = e
        mask[i, : e.shape[0]] = 1
    inputs[:, longest:] = meta_queries
    mask[:, longest:] = 1
    # Queries continue the prompt's positions; padding sits between them and is masked out.
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    hidden = lm(inputs_embeds=inputs, attention_mask=mask, position_ids=position_ids, use_cache=False).last_hidden_state
    return bridge(hidden[:, -n_q:].to(next(bridge.parameters()).dtype)).float()


def text_token_embeds(mllm, ids: list[torch.Tensor], device) -> list[torch.Tensor]:
    """Token embeddings on `device`, looked up where the table is (on the CPU when the MLLM is offloaded)."""
    embed = mllm.get_input_embeddings()
    table = embed.weight.device
    return [embed(i.to(table)).to(device) for i in ids]


@torch.no_grad()
def image_tokens(mllm, pixel_values: torch.Tensor) -> torch.Tensor:
    """[N,3,448,448] normalised tiles → [N, 256, llm_hidden] image tokens (InternViT → pixel shuffle → mlp1)."""
    cfg = mllm.config
    out = mllm.model.get_image_features(pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
                                        vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    return compat.image_features(out)


def splice_image_tokens(embeds: torch.Tensor, ids: torch.Tensor, tokens: torch.Tensor, context_id: int) -> torch.Tensor:
    where = (ids == context_id).nonzero(as_tuple=True)[0]
    flat = tokens.reshape(-1, tokens.shape[-1])
    if where.numel() != flat.shape[0]:
        raise OpenUniError(f"Internal: {where.numel()} <IMG_CONTEXT> slots for {flat.shape[0]} image tokens.")
    embeds = embeds.clone()
    embeds[where] = flat.to(embeds.dtype)
    return embeds


def same_token_count(*embeds: torch.Tensor) -> list[torch.Tensor]:
    """Repeat each [B, T_i, C] conditioning along its tokens to the least common multiple of the T_i, so
    prompts of different lengths (e.g. ComfyUI's Conditioning (Concat) of two prompts, 512 queries, beside a
    256-query negative) can share one batch. SANA reads the conditioning only through per-token projections
    and softmax cross-attention with an all-ones mask, and repeating every key/value k times leaves softmax
    attention unchanged (each weight is divided by k and summed k times), so the result is the same up to
    float rounding. ComfyUI's own CONDCrossAttn batches conditioning of different lengths the same way."""
    counts = [e.shape[1] for e in embeds]
    common = math.lcm(*counts)
    return [e if t == common else e.repeat(1, common // t, 1) for e, t in zip(embeds, counts)]
