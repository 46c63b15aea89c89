"""Build nmt/export/paragraph.onnx: a MiniSBD sentence splitter that keeps each paragraph as one sentence.

LibreTranslate installs the Argos Translate fork `argos-translate-lt`, which splits every input
paragraph (line) into sentences with MiniSBD before translating: `argostranslate/sbd.py`'s
`MiniSBDSentencizer` opens the first `<package>/minisbd/*.onnx` and otherwise downloads a model for
the source language. `nmt translate` translates each line whole, so every Argos package that
`nmt export --argos` writes carries this model, and the client needs no download.

What minisbd 0.9.5 asks of a model (`inference.py`, `modules/data.py`, `modules/inference.py`):
- metadata `config` (JSON, must be non-empty): `feat_funcs` names the per-character features;
  `end_of_para` is 1 at a paragraph's last character and 0 elsewhere (and at padding);
  `vocab` (JSON): the character vocabulary's state, of which only `<PAD>` and `<UNK>` are needed
  here; `lang_code` is informational.
- inputs `units` (B, N) int64 character ids and `features` (B, N, F) float32; output 0 the
  per-character logits (B, N, 5) over: 0 inside a token, 1 token end, 2 sentence end, 3 and 4
  the same for multi-word tokens. minisbd takes the argmax.
This graph ignores `units` (minisbd feeds it by name, so it must be an input) and scores
`logits = end_of_para * [-1, 0, 1, 0, 0] + [0.5, 0, 0, 0, 0]`: class 0 everywhere but class 2 at
the paragraph's end, so the paragraph is one sentence of one token, which minisbd returns as the
paragraph's text without surrounding whitespace.

The IR version, opset and producer are pinned, so the bytes do not depend on the installed onnx
(tests/unit/test_argos.py rebuilds them and compares):

    python scripts/build_minisbd_model.py            # writes nmt/export/paragraph.onnx
    python scripts/build_minisbd_model.py --check    # exit 1 if the committed file differs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "nmt" / "export" / "paragraph.onnx"
IR_VERSION = 7  # onnxruntime >= 1.6 reads it
OPSET = 13
CLASSES = 5  # minisbd's labels: inside, token end, sentence end, MWT end, MWT + sentence end
CONFIG = {"feat_funcs": ["end_of_para"], "max_seqlen": 1000}
VOCAB = {"lang": "", "idx": 0, "cutoff": 0, "lower": False, "_id2unit": ["<PAD>", "<UNK>"]}


def model_bytes() -> bytes:
    """The serialized ONNX model (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("end_of_para_weight", TensorProto.FLOAT, [CLASSES], [-1.0, 0.0, 1.0, 0.0, 0.0])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [CLASSES], [0.5, 0.0, 0.0, 0.0, 0.0])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["features", "end_of_para_weight"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["logits"]),
        ],
        "paragraph_is_one_sentence",
        inputs=[
            helper.make_tensor_value_info("units", TensorProto.INT64, ["batch", "chars"]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "chars", 1]),
        ],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "chars", CLASSES])],
        initializer=[weight, bias],
    )
    vocab = {**VOCAB, "_unit2id": {unit: i for i, unit in enumerate(VOCAB["_id2unit"])}}
    model = helper.make_model(
        graph,
        ir_version=IR_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="nmt scripts/build_minisbd_model.py",
        producer_version="1",
    )
    helper.set_model_props(
        model, {"lang_code": "mul", "config": json.dumps(CONFIG, sort_keys=True), "vocab": json.dumps(vocab)}
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT})")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args()
    data = model_bytes()
    if args.check:
        same = args.out.is_file() and args.out.read_bytes() == data
        print(f"{args.out}: {'up to date' if same else 'differs from what this script builds'}")
        return 0 if same else 1
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
