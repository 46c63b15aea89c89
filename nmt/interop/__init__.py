"""Models from other toolkits into nmt checkpoints: Hugging Face MarianMT (OPUS-MT), `nmt.interop.marian`."""
