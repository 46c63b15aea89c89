"""Streaming, sharded `nmt prepare` against an independent in-memory reference, on all of Multi30k.

The reference is prepare as it was before streaming: every pair read into lists, one
SentencePiece training on all source then all target lines of the non-empty pairs (the
corpus is under vocab.max_sentences, so nothing is sampled), one encode per side, the
per-pair cleaning rule, concatenated arrays. The streaming prepare writes 7,000-sentence
shards with 1 and with 2 SentencePiece threads; all three must agree byte for byte.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import numpy as np
import sentencepiece as spm

from nmt.config import load_config
from nmt.data.binarize import TokenDataset
from nmt.data.corpus import CleanStats, keep_pair
from nmt.data.prepare import prepare
from nmt.data.prepared import load_references
from nmt.experiment import Experiment
from tests.conftest import ROOT


def reference(multi30k: Path, split: str, model: bytes | None) -> tuple[bytes, list[list[int]], list[list[int]]]:
    """(SentencePiece model, source ids, target ids) of a split, the way prepare did it in memory."""

    def read(lang: str) -> list[str]:
        text = gzip.open(multi30k / f"{split}.{lang}.gz", "rt", encoding="utf-8").read()
        return [line.strip() for line in text.split("\n")[:-1]]

    pairs = list(zip(read("de"), read("en"), strict=True))
    if model is None:
        nonempty = [(s, t) for s, t in pairs if s and t]
        writer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([s for s, _ in nonempty] + [t for _, t in nonempty]),
            model_writer=writer,
            vocab_size=8000,
            model_type="bpe",
            character_coverage=1.0,
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            input_sentence_size=1_000_000,
            shuffle_input_sentence=True,
            num_threads=os.cpu_count(),
            minloglevel=2,
            max_sentence_length=1 << 16,
        )
        model = writer.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=model)
    src = sp.encode([s for s, _ in pairs], out_type=int)
    tgt = sp.encode([t for _, t in pairs], out_type=int)
    if split == "train":
        stats = CleanStats()
        keep = [keep_pair(len(s), len(t), max_len=250, max_ratio=3.0, stats=stats) for s, t in zip(src, tgt)]
        src = [s for s, k in zip(src, keep) if k]
        tgt = [t for t, k in zip(tgt, keep) if k]
    return model, src, tgt


def test_sharded_streaming_prepare_equals_the_in_memory_reference(tmp_path: Path, multi30k: Path) -> None:
    ref_model, ref = None, {}
    for split in ("train", "val", "test_2016_flickr"):
        ref_model, src, tgt = reference(multi30k, split, ref_model)
        ref[split] = (src, tgt)
    outputs = []
    for threads in (1, 2):
        cfg = load_config(
            ROOT / "configs" / "multi30k_de_en.yaml",
            [f"workdir={tmp_path / f't{threads}'}", "data.shard_size=7000", "data.splits.test_2017_flickr=null"],
        )
        result = prepare(cfg, threads=threads)
        exp = Experiment.from_config(cfg)
        assert (exp.data_dir / "spm.model").read_bytes() == ref_model
        assert result.manifest["splits"]["train"]["shards"] == 5  # 29,000 pairs, a few dropped by cleaning
        names = {"train": "train", "val": "valid", "test_2016_flickr": "test_2016_flickr"}
        for split, name in names.items():
            ds = TokenDataset(exp.data_dir, name, src_vocab_size=8000, tgt_vocab_size=8000)
            src, tgt = ref[split]
            assert len(ds) == len(src)
            assert ds.src_lens.tolist() == [len(s) for s in src] and ds.tgt_lens.tolist() == [len(t) for t in tgt]
            for i in range(len(ds)):
                s, t = ds[i]
                assert s.tolist() == src[i] and t.tolist() == tgt[i], (name, i)
        assert len(load_references(exp.data_dir, "valid")) == 1014
        outputs.append({p.name: p.read_bytes() for p in sorted(exp.data_dir.iterdir()) if p.name != "manifest.json"})
        manifest = json.loads((exp.data_dir / "manifest.json").read_text())
        outputs[-1]["manifest"] = json.dumps({k: v for k, v in manifest.items() if k != "inputs"}).encode()
    assert outputs[0] == outputs[1]  # the same files whatever the number of threads
    assert np.array_equal(*(np.frombuffer(o["train.00004.src.bin"], dtype=np.uint16) for o in outputs))
