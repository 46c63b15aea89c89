"""`nmt import`: Hugging Face MarianMT models (random, built here with `transformers`, saved to disk, loaded
offline) against nmt's import of them. Oracles: transformers' own forward pass (log-probs), its
`generate` (greedy ids), and MarianTokenizer (the ids of the text)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import sentencepiece as spm
import torch

from nmt.checkpoint import stored_config
from nmt.decode.load import load_model
from nmt.decode.translate import load_for_decoding, translate_lines
from nmt.errors import NmtError
from nmt.interop.marian import import_marian
from nmt.tokens import BOS_ID, EOS_ID
from tests.corpora import reverse_pairs

os.environ["HF_HUB_OFFLINE"] = "1"
if os.environ.get("CI"):  # CI installs the dev extras, transformers among them: never skip there
    import transformers
else:
    transformers = pytest.importorskip("transformers")

PAIRS = reverse_pairs(300, seed=4)
SOURCES = [src for src, _ in PAIRS[:8]]
TARGETS = [tgt for _, tgt in PAIRS[:8]]


def train_spm(lines: list[str], size: int) -> bytes:
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, vocab_size=size, model_type="unigram",
        character_coverage=1.0, minloglevel=2,
    )  # fmt: skip
    return out.getvalue()


def marian_dir(
    tmp: Path, *, tied: bool = True, separate: bool = False, activation: str = "swish", scale: bool = True,
    layers: tuple[int, int] = (2, 1), seed: int = 0, tags: tuple[str, ...] = (),
) -> Path:  # fmt: skip
    """A random MarianMTModel with its tokenizer files, saved by transformers itself into `tmp`."""
    src_spm, tgt_spm = train_spm([s for s, _ in PAIRS], 28), train_spm([t for _, t in PAIRS], 32)
    (tmp / "spm").mkdir(parents=True)
    (tmp / "spm" / "source.spm").write_bytes(src_spm)
    (tmp / "spm" / "target.spm").write_bytes(tgt_spm)

    def pieces(model: bytes) -> list[str]:
        sp = spm.SentencePieceProcessor(model_proto=model)
        return [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not sp.is_control(i) and not sp.is_unknown(i)]

    def vocab_json(names: list[str], path: Path, size: int = 0) -> int:
        ordered = sorted(dict.fromkeys(names), reverse=True)  # an order unlike SentencePiece's ids
        ordered += [f"▁unused{i}" for i in range(size - 3 - len(ordered))]  # <pad> at the same id on both sides
        table = {"</s>": 0, "<unk>": 1, **{p: i + 2 for i, p in enumerate(ordered)}}
        table["<pad>"] = len(table)
        path.write_text(json.dumps(table))
        return len(table)

    if separate:
        both = max(len(pieces(src_spm)), len(pieces(tgt_spm))) + 3
        size = vocab_json(pieces(src_spm), tmp / "spm" / "vocab.json", both)
        tgt_size = vocab_json(pieces(tgt_spm), tmp / "spm" / "target_vocab.json", both)
    else:
        tag_pieces = [f">>{t}<<" for t in tags]  # a multi-target model's language tags, as OPUS-MT's
        size = tgt_size = vocab_json(tag_pieces + pieces(src_spm) + pieces(tgt_spm), tmp / "spm" / "vocab.json")
    tokenizer = transformers.MarianTokenizer(
        str(tmp / "spm" / "source.spm"), str(tmp / "spm" / "target.spm"), str(tmp / "spm" / "vocab.json"),
        target_vocab_file=str(tmp / "spm" / "target_vocab.json") if separate else None,
        source_lang="de", target_lang="en", separate_vocabs=separate,
    )  # fmt: skip
    config = transformers.MarianConfig(
        vocab_size=size, decoder_vocab_size=tgt_size, d_model=16, encoder_layers=layers[0], decoder_layers=layers[1],
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        activation_function=activation, max_position_embeddings=64, pad_token_id=tgt_size - 1,
        decoder_start_token_id=tgt_size - 1, eos_token_id=0, forced_eos_token_id=0, scale_embedding=scale,
        share_encoder_decoder_embeddings=not separate, tie_word_embeddings=tied, dropout=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = transformers.MarianMTModel(config)
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 0.5)  # random, so that the bias is tested
        for p in model.parameters():
            p.mul_(4.0)  # peaked distributions: greedy and beam choices are not near-ties
    out = tmp / "marian"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


VARIANTS = {
    "tied-swish-scaled": {},
    "untied-gelu-unscaled": {"tied": False, "activation": "gelu", "scale": False, "layers": (1, 2)},
    "separate-vocabs-relu": {"separate": True, "activation": "relu", "tied": True, "layers": (2, 2)},
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def imported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp(request.param)
    directory = marian_dir(tmp, **VARIANTS[request.param])  # type: ignore[arg-type]
    result = import_marian(directory, tmp / "model.pt")
    assert (result.src_lang, result.tgt_lang) == ("de", "en")
    return directory, tmp / "model.pt"


def hugging_face(directory: Path) -> tuple[Any, Any]:
    """transformers' tokenizer and model (eval mode) for a MarianMT directory, offline."""
    return (
        transformers.MarianTokenizer.from_pretrained(directory),
        transformers.MarianMTModel.from_pretrained(directory).eval(),
    )


def test_log_probs_and_text_ids_equal_hugging_face(imported: tuple[Path, Path]) -> None:
    directory, ckpt = imported
    tokenizer, hf = hugging_face(directory)
    native = load_model(ckpt)
    vocab, model = native.vocab, native.model
    assert vocab.src_pieces is not None and vocab.tgt_pieces is not None
    src_to_hf = {i: tokenizer.encoder[p] for i, p in enumerate(vocab.src_pieces) if p in tokenizer.encoder}
    tgt_encoder = tokenizer.target_encoder if tokenizer.separate_vocabs else tokenizer.encoder
    tgt_to_hf = {i: tgt_encoder[p] for i, p in enumerate(vocab.tgt_pieces) if p in tgt_encoder}
    batch = tokenizer(SOURCES, text_target=TARGETS, return_tensors="pt", padding=True)
    worst = 0.0
    for row, (src_ids, tgt_ids) in enumerate(zip(vocab.encode_src(SOURCES), vocab.encode_tgt(TARGETS), strict=True)):
        hf_src = [i for i in batch["input_ids"][row].tolist() if i != hf.config.pad_token_id]
        assert [src_to_hf[i] for i in [*src_ids, EOS_ID]] == hf_src  # the same text, the same ids
        hf_tgt = [i for i in batch["labels"][row].tolist() if i != hf.config.pad_token_id]
        assert [tgt_to_hf[i] for i in [*tgt_ids, EOS_ID]] == hf_tgt
        with torch.inference_mode():
            theirs = hf(
                input_ids=torch.tensor([hf_src]), labels=torch.tensor([hf_tgt])
            ).logits[0].log_softmax(-1)  # fmt: skip
            src = torch.tensor([[*src_ids, EOS_ID]])
            ours = model(src, torch.zeros_like(src, dtype=torch.bool), torch.tensor([[BOS_ID, *tgt_ids]]))[0]
            ours = ours.log_softmax(-1)  # type: ignore[union-attr]
        assert ours.shape[0] == theirs.shape[0]
        columns = [i for i in range(ours.shape[1]) if i != BOS_ID]
        diff = (ours[:, columns] - theirs[:, [tgt_to_hf[i] for i in columns]]).abs().max().item()
        worst = max(worst, diff)
        assert ours[:, BOS_ID].max().item() < -1000  # the start row nmt adds takes no probability
    print(f"{directory.parent.name}: max |log-prob difference| = {worst:.2e}")
    assert worst < 1e-4


@pytest.mark.parametrize("beam", [1, 4])
def test_greedy_and_beam_ids_equal_hugging_face_generate_at_a_fixed_length(
    imported: tuple[Path, Path], beam: int
) -> None:
    """Random models repeat themselves and rarely stop: both sides write exactly 12 tokens then EOS (HF
    forces the EOS, nmt allows only EOS at its limit)."""
    directory, ckpt = imported
    tokenizer, hf = hugging_face(directory)
    length = 12
    batch = tokenizer(SOURCES, return_tensors="pt", padding=True)
    with torch.inference_mode():
        generated = hf.generate(
            **batch, num_beams=beam, do_sample=False, min_new_tokens=length, max_new_tokens=length + 1,
            bad_words_ids=[[hf.config.pad_token_id]], forced_eos_token_id=tokenizer.eos_token_id, length_penalty=1.0,
        )  # fmt: skip
    loaded, cfg, device = load_for_decoding(
        ckpt,
        overrides=[f"decode.beam={beam}", f"decode.min_len={length}", "decode.max_len_a=0"]
        + [f"decode.max_len_b={length}"],
    )
    ours = [row[0].ids for row in translate_lines(loaded, SOURCES, cfg, device=device)]
    tgt_encoder = tokenizer.target_encoder if tokenizer.separate_vocabs else tokenizer.encoder
    pieces = loaded.vocab.tgt_pieces
    assert pieces is not None
    theirs = [
        [i for i in row.tolist()[1:] if i not in (tokenizer.eos_token_id, hf.config.pad_token_id)] for row in generated
    ]
    assert [[tgt_encoder[pieces[i]] for i in ids] for ids in ours] == theirs


def test_what_is_not_a_marian_directory_gets_one_paragraph(tmp_path: Path) -> None:
    directory = marian_dir(tmp_path / "ok")
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(
        NmtError, match=r"not a MarianMT directory: config\.json, source\.spm, target\.spm, vocab\.json missing"
    ):
        import_marian(bad, tmp_path / "x.pt")
    for name in ("config.json", "source.spm", "target.spm", "vocab.json", "tokenizer_config.json"):
        (bad / name).write_bytes((directory / name).read_bytes())
    with pytest.raises(NmtError, match=r"no weights: neither model\.safetensors nor pytorch_model\.bin"):
        import_marian(bad, tmp_path / "x.pt")
    whole = (directory / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(NmtError, match=r"model\.safetensors cannot be read"):
        import_marian(bad, tmp_path / "x.pt")
    (bad / "model.safetensors").write_bytes(whole)
    table = json.loads((directory / "vocab.json").read_text())
    (bad / "vocab.json").write_text(json.dumps({**table, "▁extra": len(table)}))  # one piece more than rows
    with pytest.raises(NmtError, match=r"has \d+ entries but its embedding \d+ rows"):
        import_marian(bad, tmp_path / "x.pt")
    (bad / "vocab.json").write_bytes((directory / "vocab.json").read_bytes())
    (bad / "tokenizer_config.json").unlink()
    with pytest.raises(NmtError, match="does not name its languages"):
        import_marian(bad, tmp_path / "x.pt")
    assert import_marian(bad, tmp_path / "x.pt", src_lang="de", tgt_lang="en").vocab_size > 0
    with pytest.raises(NmtError, match="exists"):
        import_marian(bad, tmp_path / "x.pt", src_lang="de", tgt_lang="en")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "ok", "x.pt"]


def test_an_imported_model_exports_to_ctranslate2_and_translates_as_the_checkpoint(
    imported: tuple[Path, Path], tmp_path: Path
) -> None:
    """The imported checkpoint's CTranslate2 export (its id table, output bias, position halves and embedding
    scale carried over) gives the checkpoint's greedy outputs."""
    from nmt.export.ct2 import export_checkpoint

    _, ckpt = imported
    export_checkpoint(ckpt, tmp_path / "ct2")
    overrides = ["decode.beam=1", "decode.min_len=5", "decode.max_len_a=0", "decode.max_len_b=9"]
    outputs = []
    for path in (ckpt, tmp_path / "ct2"):
        loaded, cfg, device = load_for_decoding(path, overrides=overrides)
        outputs.append([row[0].ids for row in translate_lines(loaded, SOURCES, cfg, device=device)])
    assert outputs[0] == outputs[1] and all(len(ids) >= 5 for ids in outputs[0])


# ---------------------------------------------------------------- fine-tuning an imported model


def finetune_config(tmp: Path, ckpt: Path, extra: str = "") -> Path:
    from tests.corpora import write_split

    write_split(tmp / "corpus", "train", reverse_pairs(200, seed=11), src="de", tgt="en")
    write_split(tmp / "corpus", "valid", reverse_pairs(20, seed=12), src="de", tgt="en")
    path = tmp / "finetune.yaml"
    path.write_text(f"""name: finetune
workdir: {tmp / "exp"}
data:
  splits: {{train: {tmp / "corpus" / "train"}, valid: {tmp / "corpus" / "valid"}}}
train: {{init_from: {ckpt}, device: cpu, precision: fp32, compile: false, batch_tokens: 512, lr: 1e-4,
        warmup_steps: 2, max_steps: 4, valid_every: 2, log_every: 2}}
decode: {{device: cpu, beam: 2}}
{extra}""")
    return path


def test_fine_tuning_starts_exactly_at_the_imported_model(tmp_path: Path) -> None:
    """`train.init_from`: prepare encodes with the checkpoint's vocabulary (no new one), the model, sizes and
    layout come from it, and the validation at step 0 has Hugging Face's own loss on the same lines."""
    from nmt.config import load_config
    from nmt.data.prepare import prepare
    from nmt.train.loop import train

    directory = marian_dir(tmp_path / "m")
    import_marian(directory, tmp_path / "model.pt")
    cfg = load_config(finetune_config(tmp_path, tmp_path / "model.pt"), read_stored=stored_config)
    assert (cfg.model.d_model, cfg.model.activation, cfg.model.norm) == (16, "swish", "post")  # the checkpoint's
    prepare(cfg)
    train(cfg)
    records = [json.loads(line) for line in (tmp_path / "exp" / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["event"] == "valid")
    assert first["step"] == 0

    tokenizer, hf = hugging_face(directory)
    total, tokens = 0.0, 0
    for src, tgt in reverse_pairs(20, seed=12):
        batch = tokenizer([src], text_target=[tgt], return_tensors="pt")
        with torch.inference_mode():
            logits = hf(input_ids=batch["input_ids"], labels=batch["labels"]).logits[0]
        total += torch.nn.functional.cross_entropy(logits, batch["labels"][0], reduction="sum").item()
        tokens += batch["labels"].numel()
    assert first["nll"] == pytest.approx(total / tokens, abs=1e-4)
    later = [r for r in records if r["event"] == "valid" and r["step"] == 4]
    assert later and later[0]["nll"] != first["nll"]  # it trained
    again = load_model(tmp_path / "exp" / "checkpoints" / "last.pt")  # the layout and id table travel along
    assert again.vocab.src_pieces is not None and again.model.layout.positions == "halves"  # type: ignore[union-attr]


def test_fine_tuning_config_errors_name_both_values(tmp_path: Path) -> None:
    from nmt.config import load_config
    from nmt.data.prepare import prepare
    from nmt.errors import ConfigError
    from nmt.train.loop import train

    import_marian(marian_dir(tmp_path / "m"), tmp_path / "model.pt")
    path = finetune_config(tmp_path, tmp_path / "model.pt")
    with pytest.raises(ConfigError, match=r"model\.d_model is 32, but the checkpoint it fine-tunes .* has 16"):
        load_config(path, ["model.d_model=32"], read_stored=stored_config)
    with pytest.raises(ConfigError, match=r"vocab\.size is 8000, but the checkpoint it fine-tunes .* has \d+"):
        load_config(path, ["vocab.size=8000"], read_stored=stored_config)
    assert load_config(path, ["model.dropout=0.3"], read_stored=stored_config).model.dropout == 0.3  # may change
    prepare(load_config(path, read_stored=stored_config))
    with pytest.raises(ConfigError, match=r"train\.init_from is not set, but .* was prepared for"):
        train(load_config(path, ["train.init_from=null", "model.d_model=16", "model.preset=tiny"]))


def test_a_multi_target_models_tags_are_its_languages_and_tgt_lang_picks_one(tmp_path: Path) -> None:
    """OPUS-MT's `>>fra<<` tags: imported as a multilingual model with source-side tags; `--tgt-lang fra` puts
    the tag before the source exactly as MarianTokenizer does with ">>fra<< text", and greedy outputs equal
    transformers' for each tag."""
    from nmt.decode.languages import LanguageRequest, choose_route
    from nmt.decode.translate import TranslateStats, source_ids, translate_route

    directory = marian_dir(tmp_path / "m", tags=("fra", "deu"))
    result = import_marian(directory, tmp_path / "model.pt")
    assert (result.src_lang, result.tgt_lang) == ("de", "deu, fra")
    loaded, cfg, device = load_for_decoding(
        tmp_path / "model.pt",
        overrides=["decode.beam=1", "decode.min_len=8", "decode.max_len_a=0", "decode.max_len_b=8"],
    )
    assert loaded.cfg.data.directions == ("de-deu", "de-fra") and loaded.cfg.data.lang_token == "source"
    with pytest.raises(NmtError, match="say which with --tgt-lang"):
        choose_route(loaded.cfg, loaded.vocab, LanguageRequest())
    tokenizer, hf = hugging_face(directory)
    table = loaded.vocab.src_pieces
    assert table is not None
    outputs = {}
    for tag in ("fra", "deu"):
        route = choose_route(loaded.cfg, loaded.vocab, LanguageRequest(tag))
        ours_src, _ = source_ids(loaded, SOURCES, route.steps[-1][1])
        batch = tokenizer([f">>{tag}<< {line}" for line in SOURCES], return_tensors="pt", padding=True)
        for ids, row in zip(ours_src, batch["input_ids"].tolist(), strict=True):
            assert [tokenizer.encoder[table[i]] for i in ids] == [i for i in row if i != hf.config.pad_token_id]
        rows = translate_route(loaded, SOURCES, cfg, route, device=device, stats=TranslateStats())
        ours = [[tokenizer.encoder[table[i]] for i in r[0].ids] for r in rows]
        with torch.inference_mode():
            generated = hf.generate(
                **batch, num_beams=1, do_sample=False, min_new_tokens=8, max_new_tokens=9,
                bad_words_ids=[[hf.config.pad_token_id]],
            )  # fmt: skip
        theirs = [[i for i in row.tolist()[1:] if i != tokenizer.eos_token_id] for row in generated]
        assert ours == theirs
        outputs[tag] = ours_src[0][0]
    assert table[outputs["fra"]] == ">>fra<<" and table[outputs["deu"]] == ">>deu<<"  # each source starts with its tag
