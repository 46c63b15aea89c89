"""nmt.metrics against the sacrebleu CLI, including the target-language tokenizers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nmt.errors import ConfigError
from nmt.metrics import bleu, bleu_language, check_tokenizer, corpus_scores

SACREBLEU = Path(sys.executable).parent / "sacrebleu"
ZH_REFS = ["我们今天去公园散步。", "他在图书馆看书，看了一下午。", "这只猫很可爱。"]
ZH_HYPS = ["我们今天去公园。", "他在图书馆里看书一下午。", "这只狗很可爱。"]


def _cli_bleu(tmp_path: Path, hyps: list[str], refs: list[str], *args: str) -> dict:
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("".join(f"{h}\n" for h in hyps), encoding="utf-8")
    ref.write_text("".join(f"{r}\n" for r in refs), encoding="utf-8")
    out = subprocess.run(
        [str(SACREBLEU), str(ref), "-i", str(hyp), "-m", "bleu", "-w", "4", "--format", "json", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


@pytest.mark.parametrize("lang", ["zh", "zh-CN", "zh_hans"])
def test_chinese_target_uses_the_zh_tokenizer_like_the_cli(tmp_path: Path, lang: str) -> None:
    cli = _cli_bleu(tmp_path, ZH_HYPS, ZH_REFS, "-l", "en-zh")
    ours = corpus_scores(ZH_HYPS, [ZH_REFS], keys=("bleu",), tgt_lang=lang)["bleu"]
    assert round(ours.score, 4) == pytest.approx(cli["score"], abs=1e-4)
    assert "tok:zh" in ours.signature and "tok:zh" in cli["signature"]
    # with 13a, an unsegmented Chinese sentence is one "word": a different (and meaningless) score
    assert bleu(ZH_HYPS, [ZH_REFS]) != pytest.approx(ours.score, abs=1e-2)


def test_other_languages_use_13a_like_the_cli(tmp_path: Path) -> None:
    hyps, refs = ["the cat sat on a mat ."], ["the cat sat on the mat ."]
    cli = _cli_bleu(tmp_path, hyps, refs, "-l", "de-en")
    ours = corpus_scores(hyps, [refs], keys=("bleu",), tgt_lang="en")["bleu"]
    assert round(ours.score, 4) == pytest.approx(cli["score"], abs=1e-4) and "tok:13a" in ours.signature


def test_language_codes() -> None:
    assert [bleu_language(c) for c in ("zh", "ZH-tw", "ja", "ko_KR", "en", "de", None, "")] == [
        "zh", "zh", "ja", "ko", "", "", "", "",
    ]  # fmt: skip


@pytest.mark.parametrize(("lang", "modules", "extra"), [("ja", ("MeCab", "ipadic"), "ja"), ("ko", ("mecab_ko",), "ko")])
def test_missing_mecab_is_reported_before_any_work(lang: str, modules: tuple[str, ...], extra: str) -> None:
    installed = all(importlib.util.find_spec(m) is not None for m in modules)
    if installed:
        check_tokenizer(lang, where="config.yaml")
        return
    with pytest.raises(ConfigError) as err:
        check_tokenizer(lang, where="config.yaml")
    assert f"sacrebleu[{extra}]" in (err.value.hint or "") and "config.yaml" in err.value.message
    check_tokenizer("en", where="config.yaml")  # no extra needed


def test_training_stops_before_any_work_without_the_tokenizer(tmp_path: Path) -> None:
    from nmt.config import load_config
    from nmt.train.loop import train

    cfg = load_config(None, ["data.tgt_lang=ja", f"workdir={tmp_path / 'exp'}", "train.device=cpu"])
    if importlib.util.find_spec("MeCab") is not None and importlib.util.find_spec("ipadic") is not None:
        pytest.skip("sacrebleu[ja] is installed here: nothing to report")
    with pytest.raises(ConfigError, match="ja-mecab"):
        train(cfg)  # before looking for prepared data, which does not exist
    assert not (tmp_path / "exp").exists()
