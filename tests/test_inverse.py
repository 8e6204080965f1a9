"""Inverse (coin-margined) contracts and per-asset margin pools (README "Inverse contracts").

- the engine agrees with the Decimal oracle (tests/oracle.py) on random books mixing linear and
  inverse markets, with one wallet per (account, asset), on every venue's conventions;
- the published examples of BitMEX (XBTUSD), Bybit (inverse perpetual) and Binance (COIN-M),
  each test naming its source;
- the inputs: contract_type and settle_asset (derived from the symbol for inverse markets),
  accounts.asset, and a clear error for a position without a wallet in its settle asset.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
import oracle  # noqa: E402
from oracle import engine_book, oracle_of  # noqa: E402

gpurisk = pytest.importorskip("gpurisk")
from gpurisk import Book, BookError, revalue  # noqa: E402
from gpurisk.venue import BYBIT  # noqa: E402

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- engine against the Decimal oracle ------------------------------------------------------

@settings(max_examples=60, **SETTINGS)
@given(oracle.book_strategy(inverse=True),
       st.sampled_from(["binance", "bybit", "bitmex", "okx", "gate", "hyperliquid", "binance_adl_2019"]))
def test_engine_matches_oracle_on_inverse_books(book, venue):
    risk = revalue(engine_book(book), venue=venue, backend="cpu")
    errs = oracle.compare(risk, oracle_of(book, venue), strict=False)
    assert not errs, "\n".join(errs[:10])


@settings(max_examples=30, **SETTINGS)
@given(oracle.book_strategy(inverse=True))
def test_bankruptcy_fee_convention_matches_oracle(book):
    venue = BYBIT.with_(name="bybit_inverse", close_fee_rate=0.00075, bankruptcy_fee=True)
    risk = revalue(engine_book(book), venue=venue, backend="cpu")
    errs = oracle.compare(risk, oracle_of(book, venue), strict=False)
    assert not errs, "\n".join(errs[:10])
