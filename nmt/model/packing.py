"""The non-pad target positions of a teacher-forced batch, and moving states between the padded
(B, T, D) layout and the packed (N, D) one.

Training never needs the decoder's states at target padding: right-padded rows keep their real
positions first, and causal self-attention lets a position see only earlier ones, so no real
position ever reads a padded one; the loss skips them too. The decoder therefore runs every
position-wise part (the attention projections, the feed-forward block, the LayerNorms and the
output projection onto the vocabulary) on the N real rows only, and goes back to the padded layout
for the attention itself (zeros at padding, which nothing real attends to). With ~20% target
padding that is ~20% less decoder and output-projection work, the largest part of a step with a
large vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


def select_rows(x: Tensor, keep: Tensor | None) -> Tensor:
    """`x` (B, T, D) as it is, or its rows at the flat indices `keep` (N,) into the B*T positions: (N, D)."""
    return x if keep is None else x.flatten(0, 1).index_select(0, keep)


@dataclass(frozen=True)
class Rows:
    """The real positions of a (batch, length) target: flat indices `keep` (N,) into the B*T positions."""

    keep: Tensor
    batch: int
    length: int

    def pack(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (N, D)."""
        return select_rows(x, self.keep)

    def unpack(self, x: Tensor) -> Tensor:
        """(N, D) -> (B, T, D), zeros at padding."""
        flat = x.new_zeros(self.batch * self.length, x.size(-1)).index_copy(0, self.keep, x)
        return flat.unflatten(0, (self.batch, self.length))
