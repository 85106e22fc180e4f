"""One small adapter per architecture family: where the canonical activations live in the HF module tree.

Each adapter returns a `Stack` (embedding plus one `Block` per layer) of an encoder, a decoder-only model or
T5's encoder; `Stack.sites(prefix)` turns it into TransformerLens-style names such as `blocks.3.attn.hook_z`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..core.errors import ModelError
from .hooks import Site
from .names import act_name

class UnsupportedArchitecture(ModelError):
    """The model's family has no adapter."""


@dataclass(frozen=True)
class Block:
    """The modules of one transformer layer that carry the canonical activations."""

    layer: nn.Module  # resid_pre is its input, resid_post its output
    attn_proj: nn.Module  # attention output projection: hook_z is its input, hook_attn_out its output
    mlp_out: nn.Module  # its output is hook_mlp_out (before the residual add / LayerNorm)
    pattern: Site  # where the softmaxed attention weights appear
    qkv: tuple[Site, Site, Site] | None = None  # the query, key and value projections' outputs (hook_q, _k, _v)
    cross_attn_proj: nn.Module | None = None  # T5 decoder cross-attention projection
    cross_pattern: Site | None = None


@dataclass(frozen=True)
class Stack:
    """An encoder (or decoder) as the patching engine sees it."""

    embed: nn.Module  # token embedding lookup: hook_embed is its output
    blocks: list[Block]
    n_heads: int
    d_head: int
    container: nn.ModuleList  # the HF ModuleList holding the layers (patching swaps early layers for replays)
    scope: nn.Module | None = None  # set when `embed` is shared with another stack (T5)
    n_kv_heads: int | None = None  # key and value heads under grouped-query attention (None: n_heads)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def sites(self, prefix: str = "") -> dict[str, Site]:
        """Canonical name -> Site for this stack, every name starting with `prefix`."""
        sites = {act_name("embed", prefix=prefix): Site(self.embed, "output", scope=self.scope)}
        for index, block in enumerate(self.blocks):
            def name(site: str, cross: bool = False, index: int = index) -> str:
                return act_name(site, index, prefix, cross)

            sites[name("resid_pre")] = Site(block.layer, "input")
            sites[name("z")] = Site(block.attn_proj, "input", n_heads=self.n_heads)
            sites[name("pattern")] = block.pattern
            if block.qkv is not None:
                for site, projection in zip(("q", "k", "v"), block.qkv):
                    sites[name(site)] = projection
            sites[name("attn_out")] = Site(block.attn_proj, "output")
            if block.cross_attn_proj is not None and block.cross_pattern is not None:
                sites[name("z", cross=True)] = Site(block.cross_attn_proj, "input", n_heads=self.n_heads)
                sites[name("pattern", cross=True)] = block.cross_pattern
                sites[name("cross_attn_out")] = Site(block.cross_attn_proj, "output")
            sites[name("mlp_out")] = Site(block.mlp_out, "output")
            sites[name("resid_post")] = Site(block.layer, "output")
        return sites


def _projections(query: nn.Module, key: nn.Module, value: nn.Module, config, parts: int = 1) -> tuple[Site, Site, Site]:
    """hook_q, hook_k and hook_v as the outputs of the projections (before RoPE or a query/key norm, which act
    per position, so a donor's projections give the donor's rotated and normed vectors at the same positions).
    `parts=3`: one fused projection whose output holds queries, keys and values in that order."""
    n_heads, _ = _heads(config)
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    if parts == 3:
        return tuple(Site(query, "output", n_heads=n_heads, part=(i, 3)) for i in range(3))  # type: ignore[return-value]
    return Site(query, "output", n_heads=n_heads), Site(key, "output", n_heads=n_kv), Site(value, "output", n_heads=n_kv)


def _heads(config) -> tuple[int, int]:
    """(query heads, head width): decoders may set `head_dim` apart from hidden_size / heads (Qwen3, Gemma)."""
    n_heads = getattr(config, "num_attention_heads", None) or config.n_heads
    d_head = getattr(config, "d_kv", None) or getattr(config, "head_dim", None) or config.hidden_size // n_heads
    return n_heads, d_head


def _bert_like(base: nn.Module) -> Stack:
    """BERT, ELECTRA and RoBERTa share one module layout."""
    blocks = [
        Block(
            layer=layer,
            attn_proj=layer.attention.output.dense,
            mlp_out=layer.output.dense,
            pattern=Site(layer.attention.self, "pattern"),
            qkv=_projections(layer.attention.self.query, layer.attention.self.key, layer.attention.self.value, base.config),
        )
        for layer in base.encoder.layer
    ]
    return Stack(base.embeddings.word_embeddings, blocks, *_heads(base.config), base.encoder.layer)


def _distilbert(base: nn.Module) -> Stack:
    blocks = [
        Block(
            layer=layer,
            attn_proj=layer.attention.out_lin,
            mlp_out=layer.ffn,
            pattern=Site(layer.attention, "pattern"),
            qkv=_projections(layer.attention.q_lin, layer.attention.k_lin, layer.attention.v_lin, base.config),
        )
        for layer in base.transformer.layer
    ]
    return Stack(base.embeddings.word_embeddings, blocks, *_heads(base.config), base.transformer.layer)


def _mpnet(base: nn.Module) -> Stack:
    """MPNet computes attention inline; its attention-probability dropout is where the pattern shows."""
    blocks = [
        Block(
            layer=layer,
            attn_proj=layer.attention.attn.o,
            mlp_out=layer.output.dense,
            pattern=Site(layer.attention.attn.dropout, "output"),
            qkv=_projections(layer.attention.attn.q, layer.attention.attn.k, layer.attention.attn.v, base.config),
        )
        for layer in base.encoder.layer
    ]
    return Stack(base.embeddings.word_embeddings, blocks, *_heads(base.config), base.encoder.layer)


def _modernbert(base: nn.Module) -> Stack:
    blocks = [
        Block(layer=layer, attn_proj=layer.attn.Wo, mlp_out=layer.mlp, pattern=Site(layer.attn, "pattern"),
              qkv=_projections(layer.attn.Wqkv, layer.attn.Wqkv, layer.attn.Wqkv, base.config, parts=3))
        for layer in base.layers
    ]
    return Stack(base.embeddings.tok_embeddings, blocks, *_heads(base.config), base.layers)


def t5_stack(stack: nn.Module) -> Stack:
    """A T5 encoder or decoder stack (the token embedding is shared, so it is scoped to this stack)."""
    blocks = []
    for block in stack.block:
        self_attn = block.layer[0].SelfAttention
        cross = block.layer[1].EncDecAttention if stack.is_decoder else None
        blocks.append(
            Block(
                layer=block,
                attn_proj=self_attn.o,
                mlp_out=block.layer[-1].DenseReluDense,
                pattern=Site(self_attn, "pattern"),
                qkv=_projections(self_attn.q, self_attn.k, self_attn.v, stack.config),
                cross_attn_proj=cross.o if cross is not None else None,
                cross_pattern=Site(cross, "pattern") if cross is not None else None,
            )
        )
    return Stack(stack.embed_tokens, blocks, *_heads(stack.config), stack.block, scope=stack)


def _decoder(base: nn.Module) -> Stack:
    """Decoder-only models with the Llama module layout (Qwen2, Qwen3, Llama, Mistral, Gemma 2 and 3).

    hook_z is the input of `o_proj`: one slice per query head under grouped-query attention; hook_mlp_out is
    the MLP's output before any post-feed-forward norm (Gemma) and the residual add."""
    blocks = [
        Block(layer=layer, attn_proj=layer.self_attn.o_proj, mlp_out=layer.mlp, pattern=Site(layer.self_attn, "pattern"),
              qkv=_projections(layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, base.config))
        for layer in base.layers
    ]
    return Stack(base.embed_tokens, blocks, *_heads(base.config), base.layers,
                 n_kv_heads=getattr(base.config, "num_key_value_heads", None))


Architecture = Literal["encoder", "decoder", "encoder-decoder"]


@dataclass(frozen=True)
class Adapter:
    """How to find the Stack of one family's base model, and what kind of transformer the family is."""

    stack: Callable[[nn.Module], Stack]
    architecture: Architecture


ADAPTERS: dict[str, Adapter] = {
    "bert": Adapter(_bert_like, "encoder"),
    "distilbert": Adapter(_distilbert, "encoder"),
    "electra": Adapter(_bert_like, "encoder"),
    "roberta": Adapter(_bert_like, "encoder"),
    "mpnet": Adapter(_mpnet, "encoder"),
    "modernbert": Adapter(_modernbert, "encoder"),
    "t5": Adapter(lambda base: t5_stack(base.encoder), "encoder-decoder"),
    "qwen2": Adapter(_decoder, "decoder"),
    "qwen3": Adapter(_decoder, "decoder"),
    "llama": Adapter(_decoder, "decoder"),
    "mistral": Adapter(_decoder, "decoder"),
    "gemma2": Adapter(_decoder, "decoder"),
    "gemma3_text": Adapter(_decoder, "decoder"),
}
"""The one adapter registry: a HF `model_type` -> its Adapter. A new family is one entry."""


def supported_families() -> tuple[str, ...]:
    """The architecture families that have an adapter, in registry order."""
    return tuple(ADAPTERS)


def check_supported(model_type: str, source: str) -> None:
    """Raise one sentence naming an unsupported family and listing the supported ones."""
    if model_type not in ADAPTERS:
        raise UnsupportedArchitecture(
            f"{source}: architecture {model_type!r} is not supported; "
            f"supported architectures are {', '.join(ADAPTERS)}."
        )


def architecture_of(model_type: str) -> Architecture:
    """"encoder", "decoder" or "encoder-decoder" for a supported family."""
    return ADAPTERS[model_type].architecture


def base_stack(base: nn.Module) -> Stack:
    """The Stack of a base model: an encoder (BertModel, ...), a decoder-only model (Qwen3Model, ...) or T5."""
    model_type = base.config.model_type
    check_supported(model_type, type(base).__name__)
    return ADAPTERS[model_type].stack(base)
