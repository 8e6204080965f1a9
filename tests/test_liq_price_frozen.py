"""The liquidation prices' bits, frozen before position_risk's trigger-side step was reworked
(branch liq-fast, bench/RESULTS.md 2026-11-29: the root in the main loop, the step to the
trigger side in a pass of its own, the rare search out of line, one redundant check dropped).
The rework is meant to change no bit: these digests were computed with the kernels before it.
The books hold positions whose root's neighbour does not qualify (the search runs for about 7% of
them), isolated, alone and shared cross positions, inverse markets and, in one case, ticks."""

import hashlib

import numpy as np
import pytest

from gpurisk.engine import Engine
from gpurisk.liquidation import liquidation_prices, position_risk
from gpurisk.margin import account_margin, position_margin
from gpurisk.synthetic import synthetic_book

# (venue, inverse markets, tick per symbol or 0) -> sha256 of liq_price's bytes, then status's
FROZEN = {
    ("binance", 0, 0.0):
        "2dcab854546c5f1e1b309fece3413b7b96d0da6f039c10e22333033af4e293d5",
    ("binance_adl_2019", 0, 0.5):
        "e7a4fb259b67a460413ba2712c7cc9cd6ca5cf653cae7d0348f2cbed4f0d0819",
    ("bybit", 0, 0.0):
        "74251c191813e3c86ec8e403a11a4a2fa0dff5934c834677394480e3fbcb49e1",
    ("okx", 0, 0.0):
        "0b9415e200b167e3f30f9d43f8d71dea4cb95055f5d826de396866dcc6f9a342",
    ("bitmex", 0, 0.0):
        "74251c191813e3c86ec8e403a11a4a2fa0dff5934c834677394480e3fbcb49e1",
    ("gate", 0, 0.0):
        "d801c44876b756beb4021065a365aac2e86a7acfc31d0b132f5fd2360542b689",
    ("binance", 2, 0.0):
        "e255bcbd6cbdec838036fdee1ac59ac3ede22e6b6b5a94532c0e671e342a3e4f",
    ("okx", 2, 0.0):
        "b9baf847692a402a7f8c66f39e435a7c1a1f7b5e39c66ddc58f6136cd36368dc",
}


def liquidation_digest(venue: str, inverse: int, tick: float) -> tuple[str, np.ndarray, object]:
    book = synthetic_book(4000, seed=11, inverse_markets=inverse)
    book.tick_size = np.full(len(book.symbols), tick)
    eng = Engine(book, venue=venue, backend="cpu")
    b, dev = eng.backend, eng.device
    mark = b.asarray(book.mark_price)
    pm = position_margin(b, dev, mark, eng.venue)
    am = account_margin(b, dev, pm, eng.venue)
    pr = position_risk(b, dev, mark, pm, am, eng.venue, None, True)
    h = hashlib.sha256(np.ascontiguousarray(pr.liq_price).tobytes())
    h.update(np.ascontiguousarray(pr.status).tobytes())
    return h.hexdigest(), pr.liq_price, (b, dev, pm, am, eng.venue)


@pytest.mark.parametrize("venue,inverse,tick", list(FROZEN))
def test_liquidation_prices_keep_their_bits(venue, inverse, tick):
    if inverse:
        pytest.importorskip("polars", reason="synthetic inverse markets are built with Polars")
    digest, liq, (b, dev, pm, am, v) = liquidation_digest(venue, inverse, tick)
    assert np.count_nonzero(~np.isnan(liq)) > 1000
    assert digest == FROZEN[(venue, inverse, tick)]
    # the selected-positions kernel: the same function, the same bits
    every = np.arange(liq.size, dtype=np.int64)
    again = np.full(liq.size, -1.0)
    liquidation_prices(b, dev, pm, am, v, every, again)
    assert np.array_equal(again.view(np.int64), liq.view(np.int64))
