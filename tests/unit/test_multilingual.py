"""Multilingual data, vocabulary, sampling and language choice (data.directions), on a toy corpus of
number words in English, German and French (tests.corpora.number_lines)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from nmt.checkpoint import read_checkpoint
from nmt.config import load_config
from nmt.data.directions import Marks, Mixture, Part
from nmt.data.prepare import prepare
from nmt.data.prepared import load_vocab, open_for_training, open_split
from nmt.decode.languages import LanguageRequest, choose_route
from nmt.errors import ConfigError, DataError
from nmt.experiment import Experiment
from nmt.tokens import BOS_ID, PAD_ID
from nmt.train.loop import train
from tests.corpora import FAST, multilingual_config

DIRECTIONS = ["en-de", "en-fr", "de-en"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared toy multilingual experiment (en-de, en-fr, de-en); its config path."""
    tmp = tmp_path_factory.mktemp("multi")
    cfg = multilingual_config(tmp, DIRECTIONS)
    prepare(load_config(cfg, FAST))
    return cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.directions=[de-en, deen]", r"data\.directions: 'deen' is not a direction"),
        ("data.directions=[de-en, de-de]", r"'de-de' translates a language into itself"),
        ("data.directions=[de-en, de-en]", r"data\.directions: de-en listed twice"),
        ("data.src_lang=de", r"data\.directions .* data\.src_lang belongs to a bilingual one"),
        ("vocab.joint=false", r"data\.directions needs vocab\.joint: true"),
        ("data.direction=[de-en]", r"data\.direction: unknown key; did you mean data\.directions\?"),
        ("data.sampling_temperature=0", r"data\.sampling_temperature must be > 0"),
    ],
)
def test_config_errors_name_the_key_and_the_file(tmp_path: Path, override: str, message: str) -> None:
    cfg = multilingual_config(tmp_path, DIRECTIONS)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(cfg, [override])
    assert str(cfg) in str(err.value)


def test_a_direction_without_train_files_is_an_error_naming_it(tmp_path: Path) -> None:
    cfg = load_config(multilingual_config(tmp_path, DIRECTIONS + ["cs-en"]), FAST)
    with pytest.raises(DataError, match=r"data\.directions: cs-en: .*train\.cs"):
        prepare(cfg)


def test_a_test_split_without_a_directions_files_leaves_it_out_and_says_so(tmp_path: Path) -> None:
    path = multilingual_config(tmp_path, DIRECTIONS)
    (tmp_path / "corpus" / "test.fr").unlink()
    result = prepare(load_config(path, FAST))
    assert [n for n in result.notes if "en-fr" in n and "'test'" in n]
    assert "en-fr/test" not in result.manifest["splits"] and "en-de/test" in result.manifest["splits"]


def test_language_tokens_are_control_symbols_that_text_cannot_produce(toy: Path) -> None:
    cfg = load_config(toy, FAST)
    vocab = load_vocab(Experiment.from_config(cfg).data_dir)
    assert vocab.languages == ["de", "en", "fr"]
    ids = {lang: vocab.lang_id(lang) for lang in vocab.languages}
    assert ids == {"de": 4, "en": 5, "fr": 6}  # right after pad, unk, bos, eos, in sorted order
    line = ">>fr<< three , >>de<< seven"
    assert not set(vocab.encode_src([line])[0]) & set(ids.values())
    assert vocab.decode_tgt([[ids["fr"], *vocab.encode_tgt(["sieben"])[0]]]) == ["sieben"]  # never spelled out
    # the obvious way, user_defined_symbols, would turn the user's text into the token
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["three , seven", "sieben , drei", "trois , sept"] * 20),
        model_writer=writer, vocab_size=20, user_defined_symbols=[">>fr<<"], minloglevel=2,
    )  # fmt: skip
    naive = spm.SentencePieceProcessor(model_proto=writer.getvalue())
    assert naive.piece_to_id(">>fr<<") in naive.encode(line)


def test_bilingual_configs_prepare_and_hash_as_before(tmp_path: Path) -> None:
    """A config without directions keeps its data hash: the multilingual keys are not in it."""
    from nmt.data.prepared import config_hash
    from tests.corpora import toy_config

    cfg = load_config(toy_config(tmp_path), FAST)
    assert cfg.data.src_lang == "src" and cfg.data.directions == ()
    changed = load_config(toy_config(tmp_path), [*FAST, "data.sampling_temperature=1", "data.lang_token=source"])
    assert config_hash(cfg) == config_hash(changed)


def parts(toy: Path, sizes: list[int]) -> Mixture:
    cfg = load_config(toy, FAST)
    data_dir = Experiment.from_config(cfg).data_dir
    vocab = load_vocab(data_dir)
    return Mixture(
        [
            Part.of(d, open_split(data_dir, f"{d}/train", vocab), Marks(start_id=k + 4), d[-2:], limit=n)
            for k, (d, n) in enumerate(zip(DIRECTIONS, sizes, strict=True))
        ],
        "train",
    )


def test_epoch_examples_follow_the_temperature(toy: Path) -> None:
    mix = parts(toy, [400, 100, 25])
    for temperature, shares in ((1.0, [400, 100, 25]), (1e9, [175, 175, 175]), (5.0, None)):
        ex = mix.epoch_examples(seed=1, epoch=3, temperature=temperature)
        counts = np.bincount(np.searchsorted(mix.offsets, ex, side="right") - 1, minlength=3)
        weights = np.array([400, 100, 25], dtype=float) ** (1 / temperature)
        expected = np.rint(525 * weights / weights.sum()).astype(int)
        assert counts.tolist() == expected.tolist() and (shares is None or counts.tolist() == shares)
        np.testing.assert_array_equal(ex, mix.epoch_examples(seed=1, epoch=3, temperature=temperature))
        # a small part is repeated whole: every one of its examples at least once
        assert set(ex[(ex >= 500)].tolist()) == set(range(500, 525)) or temperature == 1.0
    assert not np.array_equal(
        mix.epoch_examples(seed=1, epoch=3, temperature=5.0), mix.epoch_examples(seed=1, epoch=4, temperature=5.0)
    )
    one = Mixture(mix.parts[:1], "train")
    np.testing.assert_array_equal(one.epoch_examples(seed=1, epoch=2, temperature=5.0), np.arange(400))


def test_each_example_starts_the_decoder_with_its_target_language(toy: Path) -> None:
    from nmt.data.batching import collate

    cfg = load_config(toy, FAST)
    data = open_for_training(cfg, Experiment.from_config(cfg).data_dir, toy)
    mix = data.train
    idx = np.array([0, 400, 800, 1])  # en-de, en-fr, de-en, en-de
    batch = collate(mix, idx)
    want = [data.vocab.lang_id(x) for x in ("de", "fr", "en", "de")]
    assert batch.tgt_in[:, 0].tolist() == want
    assert BOS_ID not in batch.tgt_in[:, 0].tolist()
    src, tgt = mix[400]
    assert batch.tgt_out[1, : len(tgt)].tolist() == tgt.tolist()  # no loss spent on the language token
    non_pad = batch.tgt_out.flatten().ne(PAD_ID)  # the positions the training step projects and scores
    assert batch.tgt_keep.tolist() == non_pad.nonzero().squeeze(1).tolist() and batch.n_tgt_tokens == non_pad.sum()
    assert batch.tgt_gold.tolist() == batch.tgt_out.flatten()[non_pad].tolist()
    assert [v.name for v in data.valid] == DIRECTIONS and [len(v.refs) for v in data.valid] == [40] * 3


def test_a_source_side_tag_leads_the_source_and_the_decoder_starts_with_bos(toy: Path) -> None:
    from nmt.data.batching import collate

    cfg = load_config(toy, [*FAST, "data.lang_token=source"])
    data = open_for_training(cfg, Experiment.from_config(cfg).data_dir, toy)
    batch = collate(data.train, np.array([0, 400]))
    assert batch.src_ids[:, 0].tolist() == [data.vocab.lang_id("de"), data.vocab.lang_id("fr")]
    assert batch.tgt_in[:, 0].tolist() == [BOS_ID, BOS_ID]


def test_resume_equals_uninterrupted_with_several_directions(tmp_path: Path) -> None:
    common = [*FAST, "train.log_every=5", "train.valid_every=100", "train.precision=fp32", "model.dropout=0.1"]
    runs = {}
    for name, steps in (("straight", [16]), ("resumed", [6, 16])):
        path = multilingual_config(tmp_path / name, DIRECTIONS, sizes=(120, 10, 10))
        for i, n in enumerate(steps):
            cfg = load_config(path, [*common, f"train.max_steps={n}"])
            if i == 0:
                prepare(cfg)
            assert train(cfg).state.step == n
        runs[name] = read_checkpoint(Experiment.from_config(cfg).last_checkpoint)["model"]
    for key, value in runs["straight"].items():
        assert torch.equal(value, runs["resumed"][key]), key


def test_language_choice_errors_and_pivots(toy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(toy, FAST)
    vocab = load_vocab(Experiment.from_config(cfg).data_dir)
    with pytest.raises(ConfigError, match=r"writes 3 languages \(de, en, fr\): say which with --tgt-lang"):
        choose_route(cfg, vocab, LanguageRequest())
    with pytest.raises(ConfigError, match=r"--tgt-lang cs: .* its languages are de, en, fr; it was trained on en-de"):
        choose_route(cfg, vocab, LanguageRequest("cs"))
    route = choose_route(cfg, vocab, LanguageRequest("fr"))
    assert route.steps == (("fr", Marks(start_id=vocab.lang_id("fr"))),)
    choose_route(cfg, vocab, LanguageRequest("fr", src_lang="de"))
    assert "de-fr is zero-shot" in " ".join(capsys.readouterr().err.split())
    pivot = choose_route(cfg, vocab, LanguageRequest("fr", src_lang="de", pivot="en"))
    assert [lang for lang, _ in pivot.steps] == ["en", "fr"]
    with pytest.raises(ConfigError, match=r"--pivot fr: .* cannot translate fr-de"):
        choose_route(cfg, vocab, LanguageRequest("de", src_lang="en", pivot="fr"))
    source = load_config(toy, [*FAST, "data.lang_token=source"])
    assert choose_route(source, vocab, LanguageRequest("de")).steps[0][1] == Marks(src_tag=vocab.lang_id("de"))


def test_heatmaps_refuse_a_multilingual_model_and_a_server_loads_it_once_for_every_direction(tmp_path: Path) -> None:
    """Heatmaps refuse a multilingual checkpoint with a message, not a wrong result; `nmt serve` loads it
    once, a pair per direction with that direction's start token, and refuses a second model for one of them."""
    from nmt.decode.translate import translate
    from nmt.errors import NmtError
    from nmt.serve.models import load_pairs

    path = multilingual_config(tmp_path, DIRECTIONS, sizes=(60, 5, 5))
    cfg = load_config(path, [*FAST, "train.max_steps=2", "train.valid_every=2"])
    prepare(cfg)
    train(cfg)
    ckpt = Experiment.from_config(cfg).last_checkpoint
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    with pytest.raises(NmtError, match="--attention-dir does not draw heatmaps for multilingual models"):
        translate(
            ckpt, input=src, output=tmp_path / "out.txt", attention_dir=tmp_path / "att",
            languages=LanguageRequest("de"),
        )  # fmt: skip
    pairs = load_pairs([ckpt])
    assert sorted(pairs) == [("de", "en"), ("en", "de"), ("en", "fr")]
    assert len({id(p.loaded) for p in pairs.values()}) == 1
    vocab = pairs["en", "de"].loaded.vocab
    assert {k: p.marks.start_id for k, p in pairs.items()} == {
        (s, t): vocab.lang_id(t) for s, t in pairs
    }  # fmt: skip
    with pytest.raises(NmtError, match=r"both translate en->de"):
        load_pairs([ckpt, ckpt])


def test_a_pivot_translates_chunk_by_chunk_through_both_steps(toy: Path, tmp_path: Path) -> None:
    """With --pivot, a line typed at a terminal (chunks of one) must come out before the next is read."""
    from nmt.decode.translate import TranslateStats, load_for_decoding, translate_route

    cfg = load_config(toy, [*FAST, "train.max_steps=2", "train.valid_every=2", f"workdir={tmp_path / 'exp'}"])
    prepare(cfg)
    train(cfg)
    loaded, decode_cfg, device = load_for_decoding(Experiment.from_config(cfg).last_checkpoint)
    route = choose_route(loaded.cfg, loaded.vocab, LanguageRequest("fr", src_lang="de", pivot="en"))
    read = []

    def typed():
        for line in ("eins", "zwei", "drei"):
            read.append(line)
            yield line

    out = translate_route(loaded, typed(), decode_cfg, route, device=device, stats=TranslateStats(), chunk_lines=1)
    next(out)
    assert read == ["eins"]  # the first answer came before the second line was read
    assert len(list(out)) == 2
