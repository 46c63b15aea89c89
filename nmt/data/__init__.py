"""Data stage: text -> SentencePiece ids -> binarized, memory-mapped splits -> batches."""
