"""Models from other toolkits into nmt checkpoints: Hugging Face MarianMT (OPUS-MT), `nmt.interop.marian`;
fairseq Transformers, `nmt.interop.fairseq`; both written by `nmt.interop.writing`."""
