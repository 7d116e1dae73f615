"""The bridge from the MLLM's query states to SANA's caption space: connector + projector.

The connector is exactly transformers' `SiglipEncoder` (pre-LN encoder layers, gelu-tanh MLP,
LayerNorm eps 1e-6, no final norm) — same key names and math as OpenUni's, so the library class carries it.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import SiglipTextConfig
from transformers.models.siglip.modeling_siglip import SiglipEncoder

from .errors import OpenUniError
from .variants import HEAD_DIM


class QueryBridge(nn.Module):
    def __init__(self, hidden: int, intermediate: int, layers: int, heads: int, caption_channels: int,
                 num_queries: int = 256):
        super().__init__()
        cfg = SiglipTextConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                               num_attention_heads=heads, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                               bos_token_id=None, eos_token_id=None, pad_token_id=None)
        cfg._attn_implementation = "sdpa"
        self.connector = SiglipEncoder(cfg)
        self.projector = nn.Linear(hidden, caption_channels)
        # The 256 learnable queries live here so they travel with the bridge between devices.
        self.meta_queries = nn.Parameter(torch.empty(num_queries, hidden))

    def forward(self, query_states: torch.Tensor) -> torch.Tensor:
        out = self.connector(inputs_embeds=query_states)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.projector(hidden)


def build_query_bridge(meta_queries: torch.Tensor, connector_sd: dict[str, torch.Tensor],
                       projector_sd: dict[str, torch.Tensor], *, heads: int | None = None,
                       dtype: torch.dtype = torch.float32, source: str = "checkpoint") -> QueryBridge:
    layer_ids = {int(m[1]) for k in connector_sd if (m := re.match(r"layers\.(\d+)\.", k))}
    try:
        hidden = connector_sd["layers.0.layer_norm1.weight"].shape[0]
        intermediate = connector_sd["layers.0.mlp.fc1.weight"].shape[0]
        caption_channels = projector_sd["weight"].shape[0]
    except KeyError as e:
        raise OpenUniError(f"{source}: connector/projector weight {e} is missing; the checkpoint is incomplete.") from e
    heads = heads or max(1, hidden // HEAD_DIM)
    with torch.device("meta"):
        bridge = QueryBridge(hidden, intermediate, len(layer_ids), heads, caption_channels, meta_queries.shape[0])
    sd = {f"connector.{k}": v.to(dtype) for k, v in connector_sd.items()}
    sd.update({f"projector.{k}": v.to(dtype) for k, v in projector_sd.items()})
    sd["meta_queries"] = meta_queries.to(dtype)
    try:
        bridge.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise OpenUniError(f"{source}: connector/projector weights do not fit: {str(e)[:500]}") from e
    return bridge.eval().requires_grad_(False)
