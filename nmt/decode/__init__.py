"""Decoding: batched beam search (`beam`), greedy search (`greedy`) and sampling (`sampling`)."""
