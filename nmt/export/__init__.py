"""Export: a checkpoint -> a directory another runtime serves (CTranslate2: `nmt.export.ct2`)."""
