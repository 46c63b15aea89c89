from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from nmt.config import load_config
from nmt.data.binarize import TokenDataset
from nmt.data.prepare import prepare
from nmt.data.prepared import MANIFEST, load_vocab
from nmt.experiment import Experiment
from nmt.fileio import atomic_open, read_lines
from tests.corpora import reverse_pairs, toy_config, write_split


def test_prefix_form_with_gz_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config(toy_config(tmp_path, gz=True))
    result = prepare(cfg)
    assert not result.up_to_date
    exp = Experiment.from_config(cfg)
    vocab = load_vocab(exp.data_dir)
    assert vocab.joint and vocab.src_size == 60
    pairs = reverse_pairs(40, seed=2)
    ds = TokenDataset(exp.data_dir, "valid", src_vocab_size=vocab.src_size, tgt_vocab_size=vocab.tgt_size)
    assert len(ds) == 40
    for i in (0, 17, 39):
        src, tgt = ds[i]
        assert src.tolist() == vocab.encode_src([pairs[i][0]])[0]
        assert vocab.decode_tgt([tgt.tolist()])[0] == pairs[i][1]
        assert ds.src_lens[i] == len(src) and ds.tgt_lens[i] == len(tgt)


def test_explicit_files_and_separate_vocabs(tmp_path: Path) -> None:
    data = tmp_path / "d"
    write_split(data, "train", reverse_pairs(300, seed=1), src="x", tgt="y")
    write_split(data, "dev", reverse_pairs(10, seed=2), src="x", tgt="y")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(f"""workdir: {tmp_path / "exp"}
data:
  splits:
    train: {{src: {data / "train.x"}, tgt: {data / "train.y"}}}
    valid: {{src: {data / "dev.x"}, tgt: {data / "dev.y"}}}
vocab: {{size: 30, joint: false, type: unigram}}
model: {{share_embeddings: decoder}}
""")
    cfg = load_config(cfg_path)
    prepare(cfg)
    exp = Experiment.from_config(cfg)
    assert (exp.data_dir / "spm.src.model").is_file() and (exp.data_dir / "spm.tgt.model").is_file()
    vocab = load_vocab(exp.data_dir)
    assert not vocab.joint
    # target pieces are upper-case only: the separate target vocabulary has no lower-case words
    tgt_pieces = vocab.tgt_piece_list(list(range(4, vocab.tgt_size)))
    src_pieces = vocab.src_piece_list(list(range(4, vocab.src_size)))
    assert not any(c.islower() for p in tgt_pieces for c in p)
    assert not any(c.isupper() for p in src_pieces for c in p)


def test_cleaning_counts_each_reason(tmp_path: Path) -> None:
    data = tmp_path / "dirty"
    good = reverse_pairs(200, seed=1)
    bad = [("", "X"), ("a", ""), ("alpha " * 100, "ALPHA " * 100), ("alpha", "ALPHA " * 8)]
    write_split(data, "train", good + bad)
    write_split(data, "valid", reverse_pairs(5, seed=2) + [("", "")])
    cfg = load_config(
        toy_config(tmp_path),
        [
            f"data.splits.train={data / 'train'}",
            f"data.splits.valid={data / 'valid'}",
            "data.max_len=80",
            "data.max_ratio=4",
        ],
    )
    result = prepare(cfg)
    train = next(s for s in result.splits if s.name == "train")
    assert train.dropped == {"empty": 2, "too_long": 1, "ratio": 1}
    assert train.kept == 200 and train.lines == 204
    valid = next(s for s in result.splits if s.name == "valid")
    assert valid.kept == 6  # only training data is cleaned
    manifest = json.loads((Experiment.from_config(cfg).data_dir / MANIFEST).read_text())
    assert manifest["splits"]["train"]["dropped"]["ratio"] == 1


def test_second_run_is_a_noop_and_force_rebuilds(tmp_path: Path) -> None:
    cfg = load_config(toy_config(tmp_path))
    prepare(cfg)
    assert prepare(cfg).up_to_date
    assert not prepare(cfg, force=True).up_to_date
    assert not prepare(load_config(toy_config(tmp_path), ["vocab.size=50"])).up_to_date  # relevant config changed


def test_changed_input_rebuilds(tmp_path: Path) -> None:
    cfg = load_config(toy_config(tmp_path))
    prepare(cfg)
    write_split(tmp_path / "corpus", "valid", reverse_pairs(41, seed=9))
    assert not prepare(cfg).up_to_date


def test_spm_round_trip_on_multi30k_val(tmp_path: Path, multi30k: Path) -> None:
    cfg = load_config(
        None,
        [
            f"workdir={tmp_path / 'exp'}",
            f"data.splits.train={multi30k / 'train'}",
            f"data.splits.valid={multi30k / 'val'}",
            "vocab.size=8000",
        ],
    )
    prepare(cfg)
    vocab = load_vocab(Experiment.from_config(cfg).data_dir)
    for lang, sp in (("de", vocab.src), ("en", vocab.tgt)):
        lines = list(read_lines(multi30k / f"val.{lang}.gz"))
        decoded = sp.decode(sp.encode(lines, out_type=int))
        normalized = [sp.normalize(line).replace("▁", " ").strip() for line in lines]
        mismatches = [(a, b) for a, b in zip(decoded, normalized) if a != b]
        assert not mismatches, mismatches[:3]


def test_atomic_open_keeps_previous_content_on_interrupt(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_open(target) as fh:
        fh.write(b"new half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_gz_and_plain_read_identically(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"eins\nzwei\r\ndrei")
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"eins\nzwei\r\ndrei"))
    assert list(read_lines(tmp_path / "a.txt")) == list(read_lines(tmp_path / "a.txt.gz")) == ["eins", "zwei", "drei"]


def test_each_side_is_read_with_its_own_vocabulary_dtype(tmp_path: Path) -> None:
    """A source vocabulary under 65,536 pieces (uint16) beside a target one over it (int32)."""
    from nmt.data.binarize import write_split

    src = [[5, 6, 7], [65_000], [], [1]]
    tgt = [[70_000, 4], [100_000, 65_536, 9], [8], []]
    for shard_size in (None, 1, 3):  # one shard, one per sentence, a last shard that is not full
        write_split(tmp_path, "valid", src, tgt, src_vocab_size=65_535, tgt_vocab_size=120_000, shard_size=shard_size)
        ds = TokenDataset(tmp_path, "valid", src_vocab_size=65_535, tgt_vocab_size=120_000)
        assert [(s.tolist(), t.tolist()) for s, t in (ds[i] for i in range(len(ds)))] == list(zip(src, tgt))
        assert ds.src_lens.tolist() == [3, 1, 0, 1] and ds.tgt_lens.tolist() == [2, 3, 1, 0]
        for f in tmp_path.glob("valid.*"):
            f.unlink()


def test_references_are_kept_as_written(tmp_path: Path) -> None:
    """Validation scores against these: characters SentencePiece would normalise or drop stay."""
    from nmt.data.prepared import load_references

    data = tmp_path / "corpus"
    write_split(data, "train", reverse_pairs(200, seed=1), src="x", tgt="y")
    valid = [("a b", "ﬁne ½ ☃ Ünïcode"), ("", "empty source"), ("c d", "trailing spaces"), ("e", "x\ry")]
    write_split(data, "dev", valid, src="x", tgt="y")
    path = tmp_path / "c.yaml"
    path.write_text(f"""workdir: {tmp_path / "exp"}
data:
  splits:
    train: {{src: {data / "train.x"}, tgt: {data / "train.y"}}}
    valid: {{src: {data / "dev.x"}, tgt: {data / "dev.y"}}}
vocab: {{size: 60}}
""")
    cfg = load_config(path)
    prepare(cfg)
    exp = Experiment.from_config(cfg)
    refs = load_references(exp.data_dir, "valid")
    assert refs == [t for _, t in valid]
    assert len(refs) == len(TokenDataset(exp.data_dir, "valid", src_vocab_size=60, tgt_vocab_size=60))


def test_byte_fallback_keeps_unseen_characters_as_bytes() -> None:
    """With vocab.byte_fallback a character never seen in training survives encoding (as UTF-8
    byte pieces) and decodes back; without it, it becomes <unk> and is lost."""
    from nmt.config import VocabConfig
    from nmt.data.vocab import train_vocab
    from nmt.tokens import UNK_ID

    pairs = reverse_pairs(300, seed=4)
    unseen = "alpha 漢字 bravo €"
    decoded = {}
    for fallback in (False, True):
        cfg = VocabConfig(size=300 if fallback else 60, byte_fallback=fallback)
        vocab = train_vocab(lambda: iter(pairs), len(pairs), cfg, seed=1, text=str.strip)
        ids = vocab.encode_src([unseen])[0]
        decoded[fallback] = (UNK_ID in ids, vocab.decode_tgt([ids])[0])
        if fallback:
            assert "<0xE6>" in vocab.src_piece_list(ids)  # 漢 = E6 BC A2
    assert decoded[False][0] and decoded[False][1] != unseen
    assert decoded[True] == (False, unseen)


def test_byte_fallback_with_too_small_a_vocabulary_says_so() -> None:
    from nmt.config import VocabConfig
    from nmt.data.vocab import train_vocab
    from nmt.errors import ConfigError

    pairs = reverse_pairs(50, seed=4)
    with pytest.raises(ConfigError, match="too small for vocab.byte_fallback"):
        train_vocab(lambda: iter(pairs), len(pairs), VocabConfig(size=100, byte_fallback=True), seed=1, text=str.strip)


def test_a_second_prepare_of_the_same_experiment_is_refused_while_one_runs(tmp_path: Path) -> None:
    """Two prepares of one experiment would swap each other's data: the second says so and stops."""
    import fcntl

    from nmt.errors import DataError

    cfg = load_config(toy_config(tmp_path, train=50, valid=5))
    exp = Experiment.from_config(cfg)
    exp.root.mkdir(parents=True)
    with open(exp.root / ".prepare.lock", "a") as held:  # what a running prepare holds
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DataError, match="another nmt prepare of .* is running"):
            prepare(cfg)
    assert prepare(cfg).up_to_date is False  # free again


def test_data_prepared_before_links_is_rebuilt_into_a_link(tmp_path: Path) -> None:
    """An experiment from before streaming: `data/` a real directory with a format-2 manifest.
    The next prepare rebuilds (the format is part of the config hash) and swaps the link in."""
    import os
    import shutil

    cfg = load_config(toy_config(tmp_path, train=60, valid=5))
    prepare(cfg)
    exp = Experiment.from_config(cfg)
    target = exp.root / os.readlink(exp.data_dir)
    exp.data_dir.unlink()
    shutil.copytree(target, exp.data_dir)  # a real directory, as the old prepare left it
    shutil.rmtree(target)
    manifest = json.loads((exp.data_dir / MANIFEST).read_text())
    (exp.data_dir / MANIFEST).write_text(json.dumps({**manifest, "version": 2, "config_hash": "from an older nmt"}))
    result = prepare(cfg)
    assert not result.up_to_date and exp.data_dir.is_symlink()
    assert json.loads((exp.data_dir / MANIFEST).read_text())["version"] == 3
    assert sorted(p.name for p in exp.root.iterdir() if p.name.startswith(("data", ".data"))) == [
        "data",
        os.readlink(exp.data_dir),
    ]


@pytest.mark.parametrize("sides", [(0, 1), (0,), (1,)])
@pytest.mark.parametrize("max_sentences", [5, 37, 10_000])
def test_sentencepiece_sample_is_the_drawn_positions_read_once(sides: tuple[int, ...], max_sentences: int) -> None:
    """The streamed sample equals indexing the whole in-memory list [side 0 ..., side 1 ...] at
    the positions numpy's seeded generator draws (all of them when the list is short enough),
    empty pairs skipped; only the lines drawn are decoded."""
    import numpy as np

    from nmt.data.vocab import sample_sentences

    pairs = reverse_pairs(200, seed=9)
    pairs[17] = ("", "ECHO")  # an empty side: the pair is never used
    n = len(pairs)
    decoded = []

    def text(line: str) -> str:
        decoded.append(line)
        return line.strip()

    got = list(sample_sentences(iter(pairs), n, sides=sides, max_sentences=max_sentences, seed=3, text=text))
    virtual = [p[side] for side in sides for p in pairs]
    if len(virtual) > max_sentences:
        positions = sorted(np.random.default_rng(3).choice(len(virtual), size=max_sentences, replace=False).tolist())
    else:
        positions = list(range(len(virtual)))
    assert got == [virtual[i] for i in positions if i % n != 17]
    assert len(decoded) <= 2 * len({i % n for i in positions})  # both sides of each pair drawn, no more
    assert got == list(
        sample_sentences(iter(pairs), n, sides=sides, max_sentences=max_sentences, seed=3, text=str.strip)
    )


def test_vectorised_cleaning_equals_the_per_pair_rule() -> None:
    """keep_mask over a chunk keeps and counts exactly what keep_pair does pair by pair."""
    import numpy as np

    from nmt.data.corpus import CleanStats, keep_mask, keep_pair

    rng = np.random.default_rng(0)
    src, tgt = rng.integers(0, 40, size=5000), rng.integers(0, 40, size=5000)
    per_pair, vectorised = CleanStats(), CleanStats()
    want = [keep_pair(int(s), int(t), max_len=30, max_ratio=2.5, stats=per_pair) for s, t in zip(src, tgt)]
    got = keep_mask(src, tgt, max_len=30, max_ratio=2.5, stats=vectorised)
    assert got.tolist() == want
    assert (vectorised.kept, vectorised.dropped) == (per_pair.kept, per_pair.dropped)
    assert all(per_pair.dropped.values())  # every reason occurred


@pytest.mark.parametrize("chunks", [1, 7])
def test_length_summary_from_the_histogram_equals_numpy(chunks: int) -> None:
    """Prepare's table (tokens, mean, p95, max) from a histogram fed chunk by chunk equals numpy on the array."""
    import numpy as np

    from nmt.data.prepare import _Lengths

    for n in (1, 2, 19, 1000):
        lens = np.random.default_rng(n).integers(0, 90, size=n)
        hist = _Lengths()
        for part in np.array_split(lens, chunks):
            hist.add(part)
        tokens, mean, p95, longest = hist.summary()
        assert (tokens, longest) == (int(lens.sum()), int(lens.max()))
        assert mean == pytest.approx(lens.mean()) and p95 == pytest.approx(np.percentile(lens, 95))
    assert _Lengths().summary() == (0, 0.0, 0.0, 0)
