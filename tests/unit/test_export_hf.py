"""`nmt export --hf`: the Hugging Face MarianMT directory is read by transformers itself (MarianMTModel,
MarianTokenizer) and converted by CTranslate2's ct2-transformers-converter. Oracles: nmt's own forward
pass and greedy search on the checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nmt.checkpoint import build_checkpoint, save_checkpoint
from nmt.config import config_from_dict
from nmt.data.vocab import Vocab
from nmt.decode.load import load_model
from nmt.decode.translate import load_for_decoding, translate_lines
from nmt.errors import NmtError
from nmt.export.hf import export_hf, marian_ids
from nmt.interop.marian import import_marian
from nmt.model import build_model
from nmt.tokens import BOS_ID, EOS_ID
from tests.corpora import reverse_pairs, toy_vocabs

os.environ["HF_HUB_OFFLINE"] = "1"
if os.environ.get("CI"):
    import transformers
else:
    transformers = pytest.importorskip("transformers")

PAIRS = reverse_pairs(300, seed=7)
SOURCES = [src for src, _ in PAIRS[:8]]


def nmt_checkpoint(path: Path, vocab: Vocab, *, seed: int = 0, **model: object) -> Path:
    """A random nmt-trained-style checkpoint (interleaved positions) of a post-norm Transformer."""
    cfg = config_from_dict(
        {
            "data": {"src_lang": "de", "tgt_lang": "en"},
            "vocab": {"joint": vocab.joint, "size": vocab.src_size},
            "model": {"preset": "tiny", "norm": "post", "max_len": 48, "d_model": 16, "n_heads": 2, "ffn_dim": 32,
                      "enc_layers": 2, "dec_layers": 1, **model},
            "decode": {"device": "cpu", "beam": 3},
        }
    )  # fmt: skip
    torch.manual_seed(seed)
    net = build_model(cfg.model, src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size)
    ckpt = build_checkpoint(
        model_state=net.state_dict(), cfg=cfg, vocab_models=(vocab.src_model, vocab.tgt_model), step=5, epoch=0,
        train_state=None,
    )  # type: ignore[attr-defined]  # fmt: skip
    save_checkpoint(path, ckpt)
    return path


@pytest.fixture(scope="module")
def vocabs() -> dict[bool, Vocab]:
    return toy_vocabs(PAIRS)


CASES = {
    "nmt-joint-all-swish": dict(joint=True, activation="swish"),
    "nmt-separate-decoder-gelu": dict(joint=False, share_embeddings="decoder", activation="gelu"),
    "nmt-joint-none-relu": dict(joint=True, share_embeddings="none"),
}


def hf_log_probs(directory: Path, src: list[int], tgt: list[int]) -> torch.Tensor:
    """transformers' log-probs of tgt + eos given src, all in nmt's ids (mapped through marian_ids)."""
    hf = transformers.MarianMTModel.from_pretrained(directory).eval()
    rows = marian_ids(hf.config.decoder_vocab_size)
    to_hf = torch.argsort(rows)  # nmt id -> Marian id
    start = hf.config.decoder_start_token_id
    with torch.inference_mode():
        logits = hf(
            input_ids=to_hf[torch.tensor([src])],
            decoder_input_ids=torch.tensor([[start, *to_hf[torch.tensor(tgt)].tolist()]]),
        ).logits[0]
    return logits.log_softmax(-1)[:, to_hf]


@pytest.mark.parametrize("case", list(CASES))
def test_transformers_computes_nmt_log_probs_and_tokenizes_as_nmt(
    case: str, vocabs: dict[bool, Vocab], tmp_path: Path
) -> None:
    options = dict(CASES[case])
    vocab = vocabs[bool(options.pop("joint"))]
    ckpt = nmt_checkpoint(tmp_path / "model.pt", vocab, **options)
    result = export_hf(ckpt, tmp_path / "hf")
    assert result.permuted  # nmt's interleaved table: the residual stream is reordered
    tokenizer = transformers.MarianTokenizer.from_pretrained(tmp_path / "hf")
    native = load_model(ckpt)
    worst = 0.0
    for line, (src_ids, tgt_ids) in zip(SOURCES, zip(vocab.encode_src(SOURCES), vocab.encode_tgt(SOURCES))):
        to_hf = torch.argsort(marian_ids(vocab.src_size))
        assert tokenizer(line)["input_ids"] == to_hf[torch.tensor([*src_ids, EOS_ID])].tolist()
        theirs = hf_log_probs(tmp_path / "hf", [*src_ids, EOS_ID], tgt_ids)
        src = torch.tensor([[*src_ids, EOS_ID]])
        with torch.inference_mode():
            ours = native.model(src, torch.zeros_like(src, dtype=torch.bool), torch.tensor([[BOS_ID, *tgt_ids]]))
        worst = max(worst, (ours[0].log_softmax(-1) - theirs).abs().max().item())  # type: ignore[index]
    print(f"{case}: max |log-prob difference| nmt vs transformers = {worst:.2e}")
    assert worst < 1e-4


def test_round_trip_of_an_imported_model_and_ctranslate2_on_the_export(tmp_path: Path) -> None:
    """MarianMT -> nmt import -> --hf -> transformers: the log-probs of the original; then
    ct2-transformers-converter on the export gives nmt's greedy outputs."""
    from tests.unit.test_import_marian import TARGETS, marian_dir

    original = marian_dir(tmp_path / "m")
    import_marian(original, tmp_path / "model.pt")
    result = export_hf(tmp_path / "model.pt", tmp_path / "hf")
    assert not result.permuted  # Marian's own position order already
    tok_a = transformers.MarianTokenizer.from_pretrained(original)
    tok_b = transformers.MarianTokenizer.from_pretrained(tmp_path / "hf")
    a = transformers.MarianMTModel.from_pretrained(original).eval()
    b = transformers.MarianMTModel.from_pretrained(tmp_path / "hf").eval()
    worst = 0.0
    for src, tgt in zip(SOURCES, TARGETS):
        x, y = tok_a(src, text_target=tgt), tok_b(src, text_target=tgt)
        assert tok_a.convert_ids_to_tokens(x["input_ids"]) == tok_b.convert_ids_to_tokens(y["input_ids"])
        with torch.inference_mode():
            la = (
                a(input_ids=torch.tensor([x["input_ids"]]), labels=torch.tensor([x["labels"]]))
                .logits[0]
                .log_softmax(-1)
            )
            lb = (
                b(input_ids=torch.tensor([y["input_ids"]]), labels=torch.tensor([y["labels"]]))
                .logits[0]
                .log_softmax(-1)
            )
        columns = [tok_b.encoder[t] for t in tok_a.encoder]  # the same pieces, in each vocabulary's ids
        worst = max(worst, (la[:, [tok_a.encoder[t] for t in tok_a.encoder]] - lb[:, columns]).abs().max().item())
        assert lb[:, tok_b.encoder["<s>"]].max().item() < -1000  # the start row the import added: out of every softmax
    print(f"round trip: max |log-prob difference| = {worst:.2e}")
    assert worst < 1e-4

    out = tmp_path / "ct2"
    done = subprocess.run(
        [sys.executable, "-m", "ctranslate2.converters.transformers", "--model", str(tmp_path / "hf"),
         "--output_dir", str(out)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    import ctranslate2

    translator = ctranslate2.Translator(str(out), device="cpu")
    loaded, cfg, device = load_for_decoding(
        tmp_path / "model.pt",
        overrides=["decode.beam=1", "decode.min_len=6", "decode.max_len_a=0", "decode.max_len_b=10"],
    )
    ours = [row[0].ids for row in translate_lines(loaded, SOURCES, cfg, device=device)]
    sources = [tok_b.convert_ids_to_tokens(tok_b(s)["input_ids"]) for s in SOURCES]
    results = translator.translate_batch(
        sources, beam_size=1, min_decoding_length=6, max_decoding_length=10, return_end_token=True,
        suppress_sequences=[["<s>"]],  # (the converter drops <pad>, the last row)
    )  # fmt: skip
    theirs = [[p for p in r.hypotheses[0] if p != "</s>"] for r in results]
    assert [loaded.vocab.tgt_piece_list(ids) for ids in ours] == theirs


def test_what_marian_cannot_express_is_refused_with_the_option_named(vocabs: dict[bool, Vocab], tmp_path: Path) -> None:
    pre = nmt_checkpoint(tmp_path / "pre.pt", vocabs[True], norm="pre")
    with pytest.raises(NmtError, match=r"model\.norm: pre: MarianMT's layers are post-norm only"):
        export_hf(pre, tmp_path / "a")
    learned = nmt_checkpoint(tmp_path / "learned.pt", vocabs[True], positions="learned")
    with pytest.raises(NmtError, match=r"model\.positions: learned"):
        export_hf(learned, tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learned.pt", "pre.pt"]
