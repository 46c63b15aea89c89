"""Tests of the scripts in scripts/ (benchmarks, the GPU check, the Multi30k download),
apart from the unit tests of nmt/."""
