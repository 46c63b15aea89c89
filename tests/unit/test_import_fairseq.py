"""`nmt import CHECKPOINT.pt --spm`: fairseq Transformers against fairseq's own outputs.

The oracle is fairseq itself: tests/fixtures/fairseq/make.sh trained two tiny models with fairseq-train
(post-norm, sinusoidal, --share-all-embeddings, relu; and pre-norm, learned positions, separate
dictionaries with --share-decoder-input-output-embed, gelu, --no-scale-embedding, --layernorm-embedding)
and stored fairseq's teacher-forced log-probs and its beam-5 outputs (SequenceGenerator, fairseq-generate's
defaults) in reference.pt. CI never installs fairseq.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from nmt.decode.load import load_model
from nmt.decode.translate import load_for_decoding, translate_lines
from nmt.errors import NmtError
from nmt.interop.fairseq import FAIRSEQ_BOS_PIECE, import_fairseq, read_dictionary
from nmt.interop.pickles import load_untrusted, plain
from nmt.tokens import BOS_ID, EOS_ID

FIXTURES = Path(__file__).parent.parent / "fixtures" / "fairseq"
SPM = FIXTURES / "spm.model"
MODELS = ("post_shared", "pre_learned")


@pytest.fixture(scope="module", params=MODELS)
def imported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param) / "model.pt"
    result = import_fairseq(FIXTURES / request.param / "checkpoint.pt", out, spm=[SPM])
    assert (result.src_lang, result.tgt_lang) == ("de", "en")
    assert result.source_note == f"dictionaries from {FIXTURES / request.param}"
    return request.param, out


def reference(name: str) -> dict[str, Any]:
    return torch.load(FIXTURES / name / "reference.pt", weights_only=True)


def fairseq_columns(name: str, pieces: tuple[str, ...]) -> list[int]:
    """For each fairseq target id, the nmt id that holds it."""
    column = {p: i for i, p in enumerate(pieces)}
    table = read_dictionary(FIXTURES / name / "dict.en.txt")
    return [EOS_ID if p == "</s>" else column[FAIRSEQ_BOS_PIECE if p == "<s>" else p] for p in table]


def test_text_ids_and_teacher_forced_log_probs_equal_fairseqs(imported: tuple[str, Path]) -> None:
    name, ckpt = imported
    ref = reference(name)
    native = load_model(ckpt)
    vocab, model = native.vocab, native.model
    assert vocab.src_pieces is not None and vocab.tgt_pieces is not None
    src_table = read_dictionary(FIXTURES / name / "dict.de.txt")
    columns = fairseq_columns(name, vocab.tgt_pieces)
    worst = 0.0
    pairs = zip(vocab.encode_src(ref["src_text"]), vocab.encode_tgt(ref["tgt_text"]), strict=True)
    for row, (src_ids, tgt_ids) in enumerate(pairs):
        # the same text gives the same pieces, hence fairseq's ids (its source ends with </s>, as nmt's)
        assert [vocab.src_pieces[i] for i in src_ids] == [src_table[i] for i in ref["src_ids"][row][:-1]]
        assert [columns[i] for i in ref["tgt_ids"][row][:-1]] == tgt_ids
        with torch.inference_mode():
            src = torch.tensor([[*src_ids, EOS_ID]])
            ours = model(src, torch.zeros_like(src, dtype=torch.bool), torch.tensor([[BOS_ID, *tgt_ids]]))[0]
            ours = ours.log_softmax(-1)  # type: ignore[union-attr]
        theirs = ref["lprobs"][row]
        assert ours.shape == (theirs.shape[0], len(vocab.tgt_pieces))
        worst = max(worst, (ours[:, columns] - theirs).abs().max().item())
        assert ours[:, BOS_ID].max().item() < -1000  # the start row nmt adds takes no probability
    print(f"{name}: max |log-prob difference| = {worst:.2e}")
    assert worst < 1e-4


def test_beam5_outputs_equal_fairseq_generate(imported: tuple[str, Path]) -> None:
    """With the decode settings the import writes (fairseq-generate's defaults), in fp32."""
    name, ckpt = imported
    ref = reference(name)
    loaded, cfg, device = load_for_decoding(ckpt, overrides=["decode.precision=fp32"])
    assert (cfg.beam, cfg.length_penalty, cfg.alpha, cfg.max_len_a, cfg.max_len_b) == (5, "average", 1.0, 0.0, 200)
    ours = [row[0] for row in translate_lines(loaded, ref["src_text"], cfg, device=device)]
    columns = fairseq_columns(name, loaded.vocab.tgt_pieces)  # type: ignore[arg-type]
    assert [list(h.ids) for h in ours] == [[columns[i] for i in tokens[:-1]] for tokens in ref["beam_tokens"]]
    assert [h.score for h in ours] == pytest.approx(ref["beam_scores"], abs=1e-4)


def test_ctranslate2_export_of_an_imported_model_translates_as_the_checkpoint(
    imported: tuple[str, Path], tmp_path: Path
) -> None:
    """fairseq's position table, the embedding LayerNorm and the output bias carried into CTranslate2."""
    pytest.importorskip("ctranslate2")
    from nmt.export.ct2 import export_checkpoint

    name, ckpt = imported
    sources = reference(name)["src_text"]
    export_checkpoint(ckpt, tmp_path / "ct2")
    overrides = ["decode.beam=1", "decode.max_len_b=40", "decode.precision=fp32"]
    outputs = []
    for path in (ckpt, tmp_path / "ct2"):
        loaded, cfg, device = load_for_decoding(path, overrides=overrides)
        outputs.append([row[0].ids for row in translate_lines(loaded, sources, cfg, device=device)])
    assert outputs[0] == outputs[1] and all(len(ids) >= 5 for ids in outputs[0])


def test_the_cli_imports_and_translates(tmp_path: Path, nmt_cli: Any) -> None:
    src = FIXTURES / "post_shared" / "checkpoint.pt"
    r = nmt_cli("import", str(src), "--spm", str(SPM), "-o", str(tmp_path / "m.pt"))
    assert r.returncode == 0, r.stderr
    message = " ".join(r.stderr.split())  # rich wraps at the terminal width: a long path moves the break
    assert "de -> en" in message and "share_embeddings all" in message, message
    r = nmt_cli("translate", str(tmp_path / "m.pt"), "--beam", "5", input="Ein Mann.\n\nZwei Hunde.\n")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3
    r = nmt_cli("import", str(src), "-o", str(tmp_path / "n.pt"))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "--spm SPM.model" in " ".join(r.stderr.split())
    assert not (tmp_path / "n.pt").exists()


# ---------------------------------------------------------------- what is not importable


def namespace_checkpoint(tmp: Path, name: str = "post_shared", **changes: Any) -> Path:
    """The fixture's checkpoint rewritten the pre-0.10 way (model description in `args`, an
    argparse.Namespace), with `changes` to its description."""
    ckpt = load_untrusted(FIXTURES / name / "checkpoint.pt")
    args = {**plain(ckpt["cfg"]["model"]), **plain(ckpt["cfg"]["task"]), **changes}
    path = tmp / "checkpoint.pt"
    torch.save({"args": argparse.Namespace(**args), "model": ckpt["model"]}, path)
    for lang in ("de", "en"):
        shutil.copy(FIXTURES / name / f"dict.{lang}.txt", tmp / f"dict.{lang}.txt")
    return path


def test_a_namespace_checkpoint_imports_to_the_same_model(tmp_path: Path) -> None:
    path = namespace_checkpoint(tmp_path)
    import_fairseq(path, tmp_path / "a.pt", spm=[SPM])
    import_fairseq(FIXTURES / "post_shared" / "checkpoint.pt", tmp_path / "b.pt", spm=[SPM])
    a, b = (torch.load(tmp_path / f"{x}.pt", weights_only=True) for x in "ab")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["layout"] == b["layout"] == {
        "positions": "fairseq", "embed_scale": True, "logits_bias": True, "layernorm_embedding": False,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arch": "lstm"}, r"architecture 'lstm' is not one nmt imports"),
        ({"adaptive_softmax_cutoff": "50,100"}, r"--adaptive-softmax-cutoff \(an adaptive softmax\) is set"),
        ({"decoder_normalize_before": True}, r"--encoder-normalize-before False and --decoder-normalize-before True"),
        ({"activation_fn": "gelu_accurate"}, r"--activation-fn gelu_accurate is not one of relu, gelu"),
        ({"decoder_output_dim": 16}, r"--decoder-output-dim 16 differs"),
        ({"source_lang": None, "target_lang": None}, r"does not name its languages"),
    ],
)
def test_an_unsupported_option_is_one_paragraph_naming_it(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    path = namespace_checkpoint(tmp_path, **changes)
    with pytest.raises(NmtError, match=message):
        import_fairseq(path, tmp_path / "out.pt", spm=[SPM])
    assert not (tmp_path / "out.pt").exists()


def test_bad_files_are_one_paragraph_and_nothing_is_written(tmp_path: Path) -> None:
    path = namespace_checkpoint(tmp_path)
    out = tmp_path / "out.pt"
    (tmp_path / "dict.en.txt").rename(tmp_path / "elsewhere.txt")
    with pytest.raises(NmtError, match=r"(?s)dict\.de\.txt and dict\.en\.txt not found .*--dict-dir"):
        import_fairseq(path, out, spm=[SPM])
    dicts = tmp_path / "dicts"
    dicts.mkdir()
    shutil.copy(tmp_path / "dict.de.txt", dicts / "dict.de.txt")
    lines = (tmp_path / "elsewhere.txt").read_text(encoding="utf-8")
    (dicts / "dict.en.txt").write_text(lines + "▁extra 1\n", encoding="utf-8")
    with pytest.raises(NmtError, match=r"--share-all-embeddings, but dict\.de\.txt and dict\.en\.txt differ"):
        import_fairseq(path, out, spm=[SPM], dict_dir=dicts)
    (dicts / "dict.de.txt").write_text(lines + "▁extra 1\n", encoding="utf-8")
    with pytest.raises(NmtError, match=r"gives 209 ids \(4 special \+ 205 entries\) but the embedding has 208 rows"):
        import_fairseq(path, out, spm=[SPM], dict_dir=dicts)
    (dicts / "dict.de.txt").write_text("▁a\n", encoding="utf-8")
    with pytest.raises(NmtError, match=r"line 1 is not '<piece> <count>'"):
        import_fairseq(path, out, spm=[SPM], dict_dir=dicts)
    whole = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(NmtError, match="not a readable checkpoint"):
        import_fairseq(tmp_path / "cut.pt", out, spm=[SPM])
    with pytest.raises(NmtError, match="cannot read the SentencePiece model"):
        import_fairseq(path, out, spm=[tmp_path / "missing.model"])
    (tmp_path / "not.model").write_bytes(b"not a sentencepiece model")
    shutil.copy(tmp_path / "elsewhere.txt", tmp_path / "dict.en.txt")
    with pytest.raises(NmtError, match="SentencePiece model is not readable"):
        import_fairseq(path, out, spm=[tmp_path / "not.model"])
    assert not out.exists()


def test_a_checkpoint_whose_pickle_would_run_code_is_refused_before_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Boom:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, ("touch pwned",))

    ckpt = load_untrusted(FIXTURES / "post_shared" / "checkpoint.pt")
    path = tmp_path / "checkpoint.pt"
    torch.save({"args": argparse.Namespace(**plain(ckpt["cfg"]["model"])), "model": ckpt["model"], "x": Boom()}, path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NmtError, match=r"refused to load global posix\.system.*nothing in it was run"):
        import_fairseq(path, tmp_path / "out.pt", spm=[SPM], dict_dir=FIXTURES / "post_shared")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out.pt").exists()


def test_hugging_face_export_refuses_fairseqs_position_table(tmp_path: Path) -> None:
    from nmt.export.hf import export_hf

    import_fairseq(FIXTURES / "post_shared" / "checkpoint.pt", tmp_path / "m.pt", spm=[SPM])
    with pytest.raises(NmtError, match="fairseq's position table .* cannot be a Hugging Face MarianMT model"):
        export_hf(tmp_path / "m.pt", tmp_path / "hf")


# ---------------------------------------------------------------- continued training


def test_continued_training_starts_at_fairseqs_loss(tmp_path: Path) -> None:
    """`train.init_from` an imported fairseq model: the validation at step 0, on the fixture's 8 sentences, is
    fairseq's own mean token NLL of them (from its stored log-probs), and training then moves it."""
    from nmt.checkpoint import stored_config
    from nmt.config import load_config
    from nmt.data.prepare import prepare
    from nmt.train.loop import train
    from tests.corpora import write_split

    name = "pre_learned"
    import_fairseq(FIXTURES / name / "checkpoint.pt", tmp_path / "model.pt", spm=[SPM])
    ref = reference(name)
    pairs = list(zip(ref["src_text"], ref["tgt_text"], strict=True))
    write_split(tmp_path / "corpus", "train", pairs * 4, src="de", tgt="en")
    write_split(tmp_path / "corpus", "valid", pairs, src="de", tgt="en")
    config = tmp_path / "continue.yaml"
    config.write_text(f"""name: continue
workdir: {tmp_path / "exp"}
data:
  splits: {{train: {tmp_path / "corpus" / "train"}, valid: {tmp_path / "corpus" / "valid"}}}
train: {{init_from: {tmp_path / "model.pt"}, device: cpu, precision: fp32, compile: false, batch_tokens: 512,
        lr: 1e-3, warmup_steps: 2, max_steps: 4, valid_every: 2, log_every: 2, label_smoothing: 0.0}}
decode: {{device: cpu, beam: 2, max_len_b: 20}}
""")
    cfg = load_config(config, read_stored=stored_config)
    assert (cfg.model.norm, cfg.model.positions, cfg.model.activation) == ("pre", "learned", "gelu")
    prepare(cfg)
    train(cfg)
    records = [json.loads(line) for line in (tmp_path / "exp" / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["event"] == "valid")
    nll = [-lp[range(len(tgt)), tgt] for lp, tgt in zip(ref["lprobs"], ref["tgt_ids"], strict=True)]
    fairseq_nll = torch.cat(nll).mean().item()
    assert first["step"] == 0 and first["nll"] == pytest.approx(fairseq_nll, abs=1e-4)
    later = [r for r in records if r["event"] == "valid" and r["step"] == 4]
    assert later and later[0]["nll"] < first["nll"]
    again = load_model(tmp_path / "exp" / "checkpoints" / "last.pt")
    assert again.model.layout.positions == "fairseq" and again.model.layout.layernorm_embedding  # type: ignore[union-attr]
