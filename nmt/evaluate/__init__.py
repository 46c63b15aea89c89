"""Scoring checkpoints and translations with sacreBLEU (`report.evaluate`)."""
