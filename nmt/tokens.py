"""The special token ids, fixed for every vocabulary and model `nmt` builds.

SentencePiece is trained with these ids (`nmt.data.vocab`), the model pads and starts
decoding with them (`nmt.model`), and the searches stop on EOS (`nmt.decode`). A decoder
input is `[BOS] + y`, its target `y + [EOS]`; a source is `x + [EOS]`.
"""

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def lang_piece(lang: str) -> str:
    """The language token of `lang` in a multilingual vocabulary (OPUS-MT's spelling: >>fr<<).

    Multilingual vocabularies hold one per language, in sorted order, at the ids right after
    the four special ids, as SentencePiece control symbols: encoding text never produces
    them (a user's literal ">>fr<<" is text) and decoding drops them.
    """
    return f">>{lang}<<"


def tag_piece(tag: str) -> str:
    """The control token of a training source's tag (`data.splits.train[k].tag`, e.g. back-translated
    pairs: <tag:bt>), placed before the source of that source's pairs. A control symbol of the
    vocabulary after the language tokens: text never encodes to it, so a user cannot send it."""
    return f"<tag:{tag}>"


def mask_piece() -> str:
    """The mask token `nmt pretrain` puts where text infilling removed a span (`nmt.data.noising`): a control
    symbol after the language tokens and tags (in a vocabulary prepared with data.monolingual), so that no
    text encodes to it."""
    return "<mask>"
