"""nmt's Transformer as a CTranslate2 `TransformerSpec`, through CTranslate2's own converter API.

This module imports `ctranslate2` at the top; `nmt.export.ct2` imports it only after
checking that the package is installed. The mapping, layer by layer (fairseq's converter
does the same for fairseq's Transformer, which has the same layout):

- token embeddings: `TokenEmbedding.weight`, scaled by sqrt(D) (`scale_embeddings`);
- positions: nmt's own table, written out as the spec's position encodings (row i is
  position i: the sinusoidal buffer in its layout, or the learned embedding's weight);
  an imported fairseq `--layernorm-embedding` model's LayerNorm after them (`layernorm_embedding`);
- self-attention: q/k/v projections fused into one (3D, D) linear, then the output one;
  cross-attention: q, k/v fused into one (2D, D) linear, then the output one;
- each sublayer's LayerNorm, pre or post (`pre_norm`), and in pre-norm the stacks' final
  LayerNorms; eps 1e-5 (torch's default, which nmt uses);
- the output projection, with the bias an imported model has. Tied weights are written once each place they
  are used; CTranslate2's `optimize` aliases the identical copies, so the file holds one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from ctranslate2.converters.converter import Converter
from ctranslate2.specs import attention_spec, common_spec, transformer_spec
from torch import nn

from nmt.model.attention import MultiHeadAttention
from nmt.model.embeddings import Embeddings
from nmt.model.layers import DecoderLayer, EncoderLayer, FeedForward
from nmt.model.transformer import Transformer, alignment_layer
from nmt.tokens import BOS_ID, EOS_ID, UNK_ID

_ACTIVATIONS = {  # GELU: erf, as nn.GELU(); SWISH: x * sigmoid(x), as nn.SiLU()
    "relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU, "swish": common_spec.Activation.SWISH,
}  # fmt: skip
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which every nmt LayerNorm uses


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy().copy()


def _set_linear(spec: common_spec.LinearSpec, *layers: nn.Linear) -> None:
    """Weights (and biases) of one or several linears, fused along the output dim."""
    spec.weight = np.concatenate([_array(layer.weight) for layer in layers])
    if layers[0].bias is not None:
        spec.bias = np.concatenate([_array(layer.bias) for layer in layers])


def _set_norm(spec: common_spec.LayerNormSpec, norm: nn.Module) -> None:
    assert isinstance(norm, nn.LayerNorm) and norm.eps == LAYER_NORM_EPS, norm
    spec.gamma = _array(norm.weight)
    spec.beta = _array(norm.bias)


def _set_attention(
    spec: attention_spec.MultiHeadAttentionSpec, attn: MultiHeadAttention, norm: nn.LayerNorm, *, self_attention: bool
) -> None:
    if self_attention:
        _set_linear(spec.linear[0], attn.q_proj, attn.k_proj, attn.v_proj)
    else:
        _set_linear(spec.linear[0], attn.q_proj)
        _set_linear(spec.linear[1], attn.k_proj, attn.v_proj)
    _set_linear(spec.linear[-1], attn.out_proj)
    _set_norm(spec.layer_norm, norm)


def _set_ffn(spec: transformer_spec.FeedForwardSpec, ffn: FeedForward, norm: nn.LayerNorm) -> None:
    _set_linear(spec.linear_0, ffn.fc1)
    _set_linear(spec.linear_1, ffn.fc2)
    _set_norm(spec.layer_norm, norm)


def _set_inputs(
    spec: transformer_spec.TransformerEncoderSpec | transformer_spec.TransformerDecoderSpec, embed: Embeddings
) -> None:
    """Token embeddings, their sqrt(D) scale (or none, for an imported model without it), and the
    position table as the model has it (row i = position i, in its layout)."""
    tokens = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings  # the encoder has a list
    tokens.weight = _array(embed.tokens.weight)
    scaled = math.isclose(embed.tokens.scale, math.sqrt(embed.tokens.weight.size(1)))
    assert scaled or embed.tokens.scale == 1.0, embed.tokens.scale
    spec.scale_embeddings = scaled  # CTranslate2 multiplies by sqrt(D), as TokenEmbedding does
    table = embed.learned.weight if embed.learned is not None else embed.table
    spec.position_encodings.encodings = _array(table)
    if isinstance(embed.norm, nn.LayerNorm):  # an imported fairseq --layernorm-embedding model
        _set_norm(spec.layernorm_embedding, embed.norm)


def transformer_spec_of(
    model: Transformer, *, norm: str, activation: str, n_heads: int
) -> transformer_spec.TransformerSpec:
    """A filled `TransformerSpec` with nmt's weights (vocabularies and config not yet set)."""
    spec = transformer_spec.TransformerSpec.from_config(
        (len(model.encoder), len(model.decoder)),
        n_heads,
        pre_norm=norm == "pre",
        activation=_ACTIVATIONS[activation],
        layernorm_embedding=isinstance(model.src_embed.norm, nn.LayerNorm),
        alignment_layer=alignment_layer(len(model.decoder)),  # return_attention: as `nmt translate --alignments`
        alignment_heads=n_heads,  # reads it: that layer's heads averaged
    )
    _set_inputs(spec.encoder, model.src_embed)
    for layer_spec, layer in zip(spec.encoder.layer, model.encoder, strict=True):
        assert isinstance(layer, EncoderLayer)
        _set_attention(layer_spec.self_attention, layer.self_attn, layer.self_attn_norm, self_attention=True)
        _set_ffn(layer_spec.ffn, layer.ffn, layer.ffn_norm)
    _set_inputs(spec.decoder, model.tgt_embed)
    for layer_spec, layer in zip(spec.decoder.layer, model.decoder, strict=True):
        assert isinstance(layer, DecoderLayer)
        _set_attention(layer_spec.self_attention, layer.self_attn, layer.self_attn_norm, self_attention=True)
        _set_attention(layer_spec.attention, layer.cross_attn, layer.cross_attn_norm, self_attention=False)
        _set_ffn(layer_spec.ffn, layer.ffn, layer.ffn_norm)
    if norm == "pre":  # post-norm stacks end with the last sublayer's own LayerNorm
        _set_norm(spec.encoder.layer_norm, model.enc_norm)
        _set_norm(spec.decoder.layer_norm, model.dec_norm)
    _set_linear(spec.decoder.projection, model.out_proj)
    return spec


class NmtConverter(Converter):
    """CTranslate2 converter for an nmt Transformer already loaded in memory.

    Args:
        src_pieces, tgt_pieces: SentencePiece piece of every id, in id order (index i = nmt id i).
        prefix_start: the decoder starts with the first piece of a `target_prefix` (a multilingual
            model's target language token, `data.lang_token: target`) instead of bos: CTranslate2's
            `decoder_start_token` is then None, as for M2M-100-style models.
    """

    def __init__(
        self,
        model: Transformer,
        *,
        norm: str,
        activation: str,
        n_heads: int,
        src_pieces: list[str],
        tgt_pieces: list[str],
        prefix_start: bool = False,
    ) -> None:
        self._model = model
        self._prefix_start = prefix_start
        self._norm, self._activation, self._n_heads = norm, activation, n_heads
        self._src_pieces, self._tgt_pieces = src_pieces, tgt_pieces

    def _load(self) -> transformer_spec.TransformerSpec:
        with torch.no_grad():
            spec = transformer_spec_of(self._model, norm=self._norm, activation=self._activation, n_heads=self._n_heads)
        spec.register_source_vocabulary(self._src_pieces)
        spec.register_target_vocabulary(self._tgt_pieces)
        config = spec.config
        config.unk_token = self._tgt_pieces[UNK_ID]
        config.bos_token = self._tgt_pieces[BOS_ID]
        config.eos_token = self._tgt_pieces[EOS_ID]
        # a decoder input starts with bos, or with the language token every call passes as target_prefix
        config.decoder_start_token = None if self._prefix_start else self._tgt_pieces[BOS_ID]
        config.add_source_bos = False
        config.add_source_eos = True  # a source is pieces + [eos]: callers pass the pieces only
        config.layer_norm_epsilon = LAYER_NORM_EPS
        return spec
