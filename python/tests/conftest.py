"""Fixtures of the sglang_mori_go tests; helpers are in mg_helpers.py."""

from __future__ import annotations

from typing import Iterator, Tuple

import pytest
from mg_helpers import make_engine

from sglang_mori_go import IOEngine


@pytest.fixture(scope="module")
def pair() -> Iterator[Tuple[IOEngine, IOEngine]]:
    """Two engines (initiator, target) registered with each other."""
    a = make_engine("init")
    b = make_engine("target")
    a.register_remote_engine(b.get_engine_desc())
    b.register_remote_engine(a.get_engine_desc())
    yield a, b
    a.close()
    b.close()
