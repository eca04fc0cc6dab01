"""`make bench` is not run by `make test` (it takes minutes and wants a quiet machine), but
every section must at least import: a rename in src must not break it unseen."""

from __future__ import annotations

import importlib

import pytest

from bench.run import SECTIONS


@pytest.mark.parametrize("section", SECTIONS)
def test_every_bench_section_imports_and_has_a_run(section):
    module = importlib.import_module(f"bench.bench_{section}")
    assert callable(module.run)
