"""The special token ids, fixed for every vocabulary and model `nmt` builds.

SentencePiece is trained with these ids (`nmt.data.vocab`), the model pads and starts
decoding with them (`nmt.model`), and the searches stop on EOS (`nmt.decode`). A decoder
input is `[BOS] + y`, its target `y + [EOS]`; a source is `x + [EOS]`.
"""

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
