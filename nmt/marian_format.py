"""The Hugging Face MarianMT format's names, shared by its reader (`nmt.interop.marian`, `nmt import`)
and its writer (`nmt.export.hf`, `nmt export --hf`), which may not import each other. A leaf.

Within an encoder or decoder layer (`model.{encoder,decoder}.layers.<i>.<name>.{weight,bias}`),
MarianMT's weight names against nmt's (`{encoder,decoder}.<i>.<name>.{weight,bias}`); MarianMT's
`activation_function` values against `model.activation`.
"""

from __future__ import annotations

LAYER_NAMES = {  # nmt -> Hugging Face
    "self_attn.q_proj": "self_attn.q_proj", "self_attn.k_proj": "self_attn.k_proj",
    "self_attn.v_proj": "self_attn.v_proj", "self_attn.out_proj": "self_attn.out_proj",
    "self_attn_norm": "self_attn_layer_norm",
    "cross_attn.q_proj": "encoder_attn.q_proj", "cross_attn.k_proj": "encoder_attn.k_proj",
    "cross_attn.v_proj": "encoder_attn.v_proj", "cross_attn.out_proj": "encoder_attn.out_proj",
    "cross_attn_norm": "encoder_attn_layer_norm",
    "ffn.fc1": "fc1", "ffn.fc2": "fc2", "ffn_norm": "final_layer_norm",
}  # fmt: skip
NMT_LAYER_NAMES = {hf: nmt for nmt, hf in LAYER_NAMES.items()}  # Hugging Face -> nmt

ACTIVATIONS = {"swish": "swish", "gelu": "gelu", "relu": "relu"}  # model.activation -> activation_function
NMT_ACTIVATIONS = {**{hf: nmt for nmt, hf in ACTIVATIONS.items()}, "silu": "swish"}  # and back (silu = swish)
