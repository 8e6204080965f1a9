"""Properties of gpurisk.revalue that hold for every book (hypothesis).

- at a position's liquidation price, equity equals maintenance margin (its account's for a
  cross position, its own for an isolated one), the other marks unchanged;
- and the position is liquidatable there (the price is on the trigger side of the root), on
  every venue; with a tick_size, the price is a multiple of the tick on the trigger side;
- at the bankruptcy price of an isolated position or of an account's only cross position,
  equity is zero; for several cross positions, closing them all at their bankruptcy prices
  leaves the account at zero;
- ADL ranks are a permutation of 1..n per (symbol, side); every input account and position
  appears exactly once, in the documented order;
- the output does not depend on the order of the input rows, and a marks override is the
  same as a book built with those marks (bit for bit).
"""

from __future__ import annotations

import os
import sys
from decimal import Decimal, localcontext

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
import oracle  # noqa: E402
from oracle import engine_book, oracle_of  # noqa: E402

gpurisk = pytest.importorskip("gpurisk")
from polars.testing import assert_frame_equal  # noqa: E402

VENUES = ("binance", "bybit", "bitmex", "hyperliquid", "dydx", "okx", "gate")
REL = 1e-9
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_CHECKS = 4  # re-revaluations per example


def revalue(eb, venue, marks=None):
    return gpurisk.revalue(eb, venue=venue, backend="cpu", marks=marks)


def contract_sizes(book):
    return {m["symbol"]: m.get("contract_size", 1.0) or 1.0 for m in book["markets"]}


def isolated_margins(book):
    return {(p["account_id"], p["symbol"]): p.get("isolated_margin", 0.0)
            for p in book["positions"] if p.get("margin_mode") == "isolated"}


def wallets(book):
    return {a["account_id"]: a["wallet_balance"] for a in book["accounts"]}


def account_scale(risk, aid, wallet, cs):
    """|wallet| + gross notional (mark and entry) + MM of the account's cross positions."""
    s = abs(wallet)
    for r in risk.positions.filter(account_id=aid).to_dicts():
        if r["margin_mode"] == "cross":
            s += r["notional"] + abs(r["size"]) * r["entry_price"] * cs[r["symbol"]] + r["maint_margin"]
    return s


def equity_and_mm(risk, row, iso, cs):
    """(equity, requirement, scale) of the account (cross) or the position (isolated): the
    requirement is the maintenance margin plus the close fee of venues that count it."""
    aid, sym = row["account_id"], row["symbol"]
    if row["margin_mode"] == "cross":
        a = risk.accounts.filter(account_id=aid).to_dicts()[0]
        return (a["equity"], a["maint_margin"] + a["close_fee"],
                account_scale(risk, aid, a["wallet_balance"], cs))
    p = risk.positions.filter(account_id=aid, symbol=sym, margin_mode="isolated").to_dicts()[0]
    m = iso[(aid, sym)]
    scale = m + p["notional"] + abs(p["size"]) * p["entry_price"] * cs[sym] + p["maint_margin"]
    return m + p["upnl"], p["maint_margin"] + p["close_fee"], scale


# ---- liquidation price ----------------------------------------------------------------

@settings(max_examples=50, **SETTINGS)
@given(oracle.book_strategy(), st.sampled_from(["binance", "bybit", "bitmex", "okx", "gate"]))
def test_equity_equals_mm_at_liquidation_price(book, venue):
    eb = engine_book(book)
    base = revalue(eb, venue)
    cs, iso = contract_sizes(book), isolated_margins(book)
    rows = [r for r in base.positions.to_dicts() if r["liq_price"] is not None]
    for r in rows[:MAX_CHECKS]:
        lp = r["liq_price"]
        assert lp > 0
        at = revalue(eb, venue, marks={r["symbol"]: lp})
        eq, mm, scale = equity_and_mm(at, r, iso, cs)
        assert abs(eq - mm) <= REL * scale, (
            f"{venue}: position {r['account_id']}/{r['symbol']}/{r['margin_mode']} at its "
            f"liq_price {lp!r}: equity {eq!r} != maint_margin {mm!r}")


# ---- bankruptcy price -----------------------------------------------------------------

@settings(max_examples=50, **SETTINGS)
@given(oracle.book_strategy(), st.sampled_from(["binance", "bitmex"]))
def test_equity_is_zero_at_bankruptcy_price(book, venue):
    eb = engine_book(book)
    base = revalue(eb, venue)
    cs, iso = contract_sizes(book), isolated_margins(book)
    n_cross = {}
    for r in base.positions.to_dicts():
        if r["margin_mode"] == "cross":
            n_cross[r["account_id"]] = n_cross.get(r["account_id"], 0) + 1
    rows = [r for r in base.positions.to_dicts() if r["bankruptcy_price"] is not None
            and (r["margin_mode"] == "isolated" or n_cross[r["account_id"]] == 1)]
    for r in rows[:MAX_CHECKS]:
        bp = r["bankruptcy_price"]
        assert bp > 0
        at = revalue(eb, venue, marks={r["symbol"]: bp})
        eq, _, scale = equity_and_mm(at, r, iso, cs)
        assert abs(eq) <= REL * scale, (
            f"{venue}: position {r['account_id']}/{r['symbol']}/{r['margin_mode']} at its "
            f"bankruptcy_price {bp!r}: equity {eq!r} != 0")


@settings(max_examples=50, **SETTINGS)
@given(oracle.book_strategy(max_accounts=4, max_symbols=3),
       st.sampled_from(["binance", "bybit", "hyperliquid"]))
def test_closing_all_cross_positions_at_bankruptcy_prices_leaves_zero(book, venue):
    risk = revalue(engine_book(book), venue)
    cs, w = contract_sizes(book), wallets(book)
    by_acc: dict = {}
    for r in risk.positions.to_dicts():
        if r["margin_mode"] == "cross":
            by_acc.setdefault(r["account_id"], []).append(r)
    for aid, rows in by_acc.items():
        if len(rows) < 2 or any(r["bankruptcy_price"] is None for r in rows):
            continue
        left = w[aid] + sum(r["size"] * (r["bankruptcy_price"] - r["entry_price"]) * cs[r["symbol"]]
                            for r in rows)
        scale = abs(w[aid]) + sum(abs(r["size"]) * cs[r["symbol"]]
                                  * max(r["bankruptcy_price"], r["entry_price"], r["mark_price"])
                                  for r in rows)
        assert abs(left) <= REL * scale, f"{venue}: account {aid}: {left!r} left after closing"


# ---- ranks, counts, order -------------------------------------------------------------

@settings(max_examples=40, **SETTINGS)
@given(oracle.book_strategy(max_accounts=8))
def test_ranks_permutations_and_every_row_once(book):
    eb = engine_book(book)
    ids = sorted(a["account_id"] for a in book["accounts"])
    keys = sorted(((p["account_id"], p["symbol"], p.get("margin_mode") or "cross")
                   for p in book["positions"]), key=lambda k: (k[0], k[1], k[2] != "cross"))
    n_pos = {}
    for k in keys:
        n_pos[k[0]] = n_pos.get(k[0], 0) + 1
    for venue in VENUES:
        risk = revalue(eb, venue)
        acc = risk.accounts.to_dicts()
        assert [a["account_id"] for a in acc] == ids, venue
        assert {a["account_id"]: a["n_positions"] for a in acc} == {i: n_pos.get(i, 0) for i in ids}
        pos = risk.positions.to_dicts()
        assert [(p["account_id"], p["symbol"], p["margin_mode"]) for p in pos] == keys, venue
        queues: dict = {}
        for p in pos:
            assert p["side"] == ("long" if p["size"] > 0 else "short")
            assert 1 <= p["adl_lights"] <= 5
            queues.setdefault((p["symbol"], p["side"]), []).append(p["adl_rank"])
        for q, ranks in queues.items():
            assert sorted(ranks) == list(range(1, len(ranks) + 1)), (venue, q, ranks)


@settings(max_examples=30, **SETTINGS)
@given(oracle.book_strategy(), st.randoms(use_true_random=False))
def test_input_row_order_does_not_matter(book, rnd):
    shuffled = {k: list(v) for k, v in book.items()}
    for v in shuffled.values():
        rnd.shuffle(v)
    e1, e2 = engine_book(book), engine_book(shuffled)
    for venue in ("binance", "bitmex", "dydx"):
        r1, r2 = revalue(e1, venue), revalue(e2, venue)
        assert_frame_equal(r1.accounts, r2.accounts, check_exact=True)
        assert_frame_equal(r1.positions, r2.positions, check_exact=True)


@settings(max_examples=30, **SETTINGS)
@given(oracle.book_strategy(), st.data())
def test_marks_override_equals_rebuilt_book(book, data):
    sym = data.draw(st.sampled_from([m["symbol"] for m in book["markets"]]))
    new = data.draw(st.integers(1, 10_000_000)) / 100
    rebuilt = {k: [dict(r) for r in v] for k, v in book.items()}
    for m in rebuilt["markets"]:
        if m["symbol"] == sym:
            m["mark_price"] = new
    for venue in ("binance", "bybit"):
        r1 = revalue(engine_book(book), venue, marks={sym: new})
        r2 = revalue(engine_book(rebuilt), venue)
        assert_frame_equal(r1.accounts, r2.accounts, check_exact=True)
        assert_frame_equal(r1.positions, r2.positions, check_exact=True)


# ---- the oracle's own root finding (no engine) ----------------------------------------

@settings(max_examples=40, **SETTINGS)
@given(oracle.book_strategy(max_accounts=3), st.sampled_from(["binance", "bitmex"]))
def test_oracle_liquidation_price_is_a_root(book, venue):
    o = oracle_of(book, venue)
    for p in o.positions[:MAX_CHECKS]:
        lp = p["liq_price"]
        if lp is None:
            continue
        # the oracle re-evaluated at the exact root (not a float): evaluate by hand
        with localcontext() as ctx:
            ctx.prec = oracle.PREC
            at = _oracle_equity_minus_mm(book, o, p, lp, venue)
            assert abs(at) <= Decimal("1e-40") * (abs(p["notional"]) + abs(p["upnl"]) + 1)


def _oracle_equity_minus_mm(book, o, p, price, venue):
    """equity - MM of p's account (cross) or of p (isolated) with p's mark set to ``price``,
    computed directly from the book's definitions."""
    tiers = oracle.build_tiers(book["tiers"])
    cs = {m["symbol"]: Decimal(m.get("contract_size", 1.0) or 1.0) for m in book["markets"]}
    mark = {m["symbol"]: Decimal(m["mark_price"]) for m in book["markets"]}
    mark[p["symbol"]] = price
    mm_base = oracle.as_venue(venue).mm_base

    def upnl_mm(r):
        q, e, s = Decimal(r["size"]), Decimal(r["entry_price"]), r["symbol"]
        ts = tiers[s]
        n = abs(q) * (mark[s] if mm_base == "mark" else e) * cs[s]
        t = ts[oracle.tier_index(ts, n)]
        return q * (mark[s] - e) * cs[s], n * t.mmr - t.cum

    if p["margin_mode"] == "isolated":
        r = next(r for r in book["positions"] if r["account_id"] == p["account_id"]
                 and r["symbol"] == p["symbol"] and r.get("margin_mode") == "isolated")
        u, m = upnl_mm(r)
        return Decimal(r["isolated_margin"]) + u - m
    w = next(Decimal(a["wallet_balance"]) for a in book["accounts"]
             if a["account_id"] == p["account_id"])
    total = w
    for r in book["positions"]:
        if r["account_id"] == p["account_id"] and (r.get("margin_mode") or "cross") == "cross":
            u, m = upnl_mm(r)
            total += u - m
    return total


# ---- liquidation price on the trigger side ----------------------------------------------

LIQUIDATED = ("liquidatable", "bankrupt")


def _statuses_at_own_liq_price(eb, venue):
    """(row, status of that position after revaluing with its symbol marked at its own
    liq_price, every other price held) for every position with a liq_price that is a valid
    mark (within the input limits: a short backed by a large wallet can have a liquidation
    price past PRICE_MAX, which no revaluation accepts as a mark)."""
    from gpurisk.schema import PRICE_MAX, PRICE_MIN

    engine = gpurisk.Engine(eb, venue=venue, backend="cpu")
    rows = engine.revalue().positions.to_dicts()
    out = []
    for i, r in enumerate(rows):
        if r["liq_price"] is not None and PRICE_MIN <= r["liq_price"] <= PRICE_MAX:
            out.append((r, engine.revalue({r["symbol"]: r["liq_price"]}).positions["status"][i]))
    return out


@settings(max_examples=40, **SETTINGS)
@given(oracle.book_strategy())
def test_every_position_is_liquidatable_at_its_liquidation_price(book):
    eb = engine_book(book)
    for venue in VENUES:
        for r, status in _statuses_at_own_liq_price(eb, venue):
            assert status in LIQUIDATED, (
                f"{venue}: position {r['account_id']}/{r['symbol']}/{r['margin_mode']} ({r['side']}) "
                f"is {status} with its mark at its own liq_price {r['liq_price']!r}")


@settings(max_examples=30, **SETTINGS)
@given(oracle.book_strategy(), st.data())
def test_tick_rounds_the_liquidation_price_on_the_trigger_side(book, data):
    ticked = {k: [dict(r) for r in v] for k, v in book.items()}
    for m in ticked["markets"]:
        m["tick_size"] = data.draw(st.sampled_from([None, 0.01, 0.5, 1.0, 25.0]))
    tick = {m["symbol"]: m["tick_size"] for m in ticked["markets"]}
    venue = data.draw(st.sampled_from(VENUES))
    plain = revalue(engine_book(book), venue).positions.to_dicts()
    rounded = _statuses_at_own_liq_price(engine_book(ticked), venue)
    got = {(r["account_id"], r["symbol"], r["margin_mode"]): r["liq_price"]
           for r in revalue(engine_book(ticked), venue).positions.to_dicts()}
    for r, status in rounded:
        assert status in LIQUIDATED, (venue, r)
    for r in plain:
        lp0, lp = r["liq_price"], got[(r["account_id"], r["symbol"], r["margin_mode"])]
        t = tick[r["symbol"]]
        if lp0 is None or t is None:
            assert lp == lp0, (venue, r, lp)
            continue
        if lp is None:  # a long whose trigger lies below the first tick above zero
            assert r["side"] == "long" and lp0 < 4 * t, (venue, r)
            continue
        assert lp == round(lp / t) * t, f"{lp!r} is not a multiple of the tick {t}"
        assert (lp <= lp0) if r["side"] == "long" else (lp >= lp0), (venue, r["side"], lp0, lp)


# ---- inverse (coin-margined) contracts ------------------------------------------------
# The same properties on books mixing linear and inverse markets, with one wallet per
# (account, asset): the margin pool of a position is its account's wallet in its market's
# settle asset, and every figure is in that asset.

def _settle(book):
    return {m["symbol"]: (m.get("contract_type") == "inverse", m.get("settle_asset") or "USDT")
            for m in book["markets"]}


def _pool_figures(risk, row, iso, cs, inverse):
    """(equity, requirement, scale) of the position's margin pool (cross) or of the position
    (isolated), in its settle asset; scale: |wallet| + coin or quote notionals + MM."""
    def value(r):  # entry value in the pool's asset
        c = cs[r["symbol"]]
        return abs(r["size"]) * c / r["entry_price"] if inverse[r["symbol"]] else abs(r["size"]) * r["entry_price"] * c
    aid, sym = row["account_id"], row["symbol"]
    if row["margin_mode"] == "cross":
        a = risk.accounts.filter(account_id=aid, asset=row["asset"]).to_dicts()[0]
        scale = abs(a["wallet_balance"]) + sum(
            r["notional"] + value(r) + r["maint_margin"]
            for r in risk.positions.filter(account_id=aid, asset=row["asset"], margin_mode="cross").to_dicts())
        return a["equity"], a["maint_margin"] + a["close_fee"], scale
    p = risk.positions.filter(account_id=aid, symbol=sym, margin_mode="isolated").to_dicts()[0]
    m = iso[(aid, sym)]
    return m + p["upnl"], p["maint_margin"] + p["close_fee"], m + p["notional"] + value(p) + p["maint_margin"]


@settings(max_examples=50, **SETTINGS)
@given(oracle.book_strategy(inverse=True), st.sampled_from(["binance", "bybit", "bitmex", "okx", "gate"]))
def test_inverse_liquidation_price_puts_the_margin_ratio_at_the_threshold(book, venue):
    eb = engine_book(book)
    base = revalue(eb, venue)
    cs, iso = contract_sizes(book), isolated_margins(book)
    inverse = {s: v[0] for s, v in _settle(book).items()}
    rows = [r for r in base.positions.to_dicts() if r["liq_price"] is not None and inverse[r["symbol"]]]
    for r in rows[:MAX_CHECKS]:
        lp = r["liq_price"]
        assert lp > 0
        at = revalue(eb, venue, marks={r["symbol"]: lp})
        eq, req, scale = _pool_figures(at, r, iso, cs, inverse)
        assert abs(eq - req) <= REL * scale, (
            f"{venue}: inverse position {r['account_id']}/{r['symbol']}/{r['margin_mode']} at its "
            f"liq_price {lp!r}: equity {eq!r} != requirement {req!r} (coin)")
        st_at = at.positions.filter(account_id=r["account_id"], symbol=r["symbol"],
                                    margin_mode=r["margin_mode"])["status"].item()
        assert st_at in ("liquidatable", "bankrupt"), (venue, r, st_at)  # on the trigger side


@settings(max_examples=50, **SETTINGS)
@given(oracle.book_strategy(inverse=True), st.sampled_from(["binance", "bitmex"]))
def test_inverse_bankruptcy_price_puts_equity_at_zero(book, venue):
    eb = engine_book(book)
    base = revalue(eb, venue)
    cs, iso = contract_sizes(book), isolated_margins(book)
    inverse = {s: v[0] for s, v in _settle(book).items()}
    pos = base.positions.to_dicts()
    n_cross: dict = {}
    for r in pos:
        if r["margin_mode"] == "cross":
            n_cross[(r["account_id"], r["asset"])] = n_cross.get((r["account_id"], r["asset"]), 0) + 1
    rows = [r for r in pos if r["bankruptcy_price"] is not None and inverse[r["symbol"]]
            and (r["margin_mode"] == "isolated" or n_cross[(r["account_id"], r["asset"])] == 1)]
    for r in rows[:MAX_CHECKS]:
        at = revalue(eb, venue, marks={r["symbol"]: r["bankruptcy_price"]})
        eq, _, scale = _pool_figures(at, r, iso, cs, inverse)
        assert abs(eq) <= REL * scale, (venue, r, eq)
    # several cross positions in one pool: closing them all at their bankruptcy prices leaves zero
    wallet = {(a["account_id"], a.get("asset") or "USDT"): a["wallet_balance"] for a in book["accounts"]}
    pools: dict = {}
    for r in pos:
        if r["margin_mode"] == "cross":
            pools.setdefault((r["account_id"], r["asset"]), []).append(r)
    for key, rs in pools.items():
        if len(rs) < 2 or any(r["bankruptcy_price"] is None for r in rs):
            continue
        left, scale = wallet[key], abs(wallet[key])
        for r in rs:
            c, q, e, b = cs[r["symbol"]], r["size"], r["entry_price"], r["bankruptcy_price"]
            left += q * c * (1 / e - 1 / b) if inverse[r["symbol"]] else q * (b - e) * c
            scale += abs(q) * c * (1 / min(e, b) if inverse[r["symbol"]] else max(e, b))
        assert abs(left) <= REL * scale, (venue, key, left)
