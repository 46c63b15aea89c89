"""The models a server holds: one language pair each, loaded once at start-up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from nmt.config import DecodeConfig
from nmt.decode.load import LoadedModel
from nmt.decode.translate import load_for_decoding
from nmt.errors import NmtError

# Names LibreTranslate clients show for a language code; a code not listed is shown as itself.
LANGUAGE_NAMES = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "fi": "Finnish", "fr": "French", "hi": "Hindi", "hu": "Hungarian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "nl": "Dutch",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "tr": "Turkish",
    "uk": "Ukrainian", "zh": "Chinese",
}  # fmt: skip


@dataclass(frozen=True, eq=False)
class Pair:
    """A loaded model and the language pair it translates."""

    source: str
    target: str
    path: Path
    loaded: LoadedModel
    decode: DecodeConfig
    device: torch.device

    @property
    def key(self) -> str:
        return f"{self.source}-{self.target}"

    @property
    def max_len(self) -> int:
        return self.loaded.model.max_len


def load_pairs(paths: Sequence[Path], *, overrides: Sequence[str] = ()) -> dict[tuple[str, str], Pair]:
    """Load every model (checkpoint or export) and key it by its config's (source, target) languages.

    Two models for the same pair are an error: a request could not say which one it means.
    """
    pairs: dict[tuple[str, str], Pair] = {}
    for path in paths:
        loaded, decode, device = load_for_decoding(path, overrides=overrides)
        if loaded.cfg.data.multilingual:
            raise NmtError(
                f"{path}: a multilingual model ({', '.join(loaded.cfg.data.directions)}) cannot be served yet",
                hint=f"translate it with the checkpoint: nmt translate {path} --tgt-lang LANG",
            )
        source, target = loaded.cfg.data.src_lang, loaded.cfg.data.tgt_lang
        if (source, target) in pairs:
            raise NmtError(
                f"{path} and {pairs[source, target].path} both translate {source}->{target}: a request names only "
                "the languages, so the server cannot choose between them",
                hint="serve one model per language pair (start a second server on another port for the other)",
            )
        pairs[source, target] = Pair(source, target, Path(path), loaded, decode, device)
    return pairs


def language_codes(pairs: dict[tuple[str, str], Pair]) -> set[str]:
    """Every language a loaded model reads or writes."""
    return {code for pair in pairs for code in pair}


def languages(pairs: dict[tuple[str, str], Pair]) -> list[dict[str, object]]:
    """LibreTranslate's `GET /languages`: every language a model reads or writes, each with the
    targets a request can name now: the direct pairs, and the language itself (a same-language
    request is answered with its text, as LibreTranslate does). No pivoting through a third language."""
    return [
        {
            "code": code,
            "name": LANGUAGE_NAMES.get(code, code),
            "targets": sorted({code} | {target for source, target in pairs if source == code}),
        }
        for code in sorted(language_codes(pairs))
    ]
