"""Screening stress scenarios (DESIGN §7): one kernel pass over the positions per batch of
scenarios finds those whose first step liquidates nobody; their summary rows come from
per-symbol totals, without a pass over the positions. ``ctx``: the stress run's context
(gpurisk.stress_context.StressContext: the device book, venue and backend)."""

from __future__ import annotations

import numpy as np

from .stress_result import POLICY_CODE
from .tier_rules import venue_tiers


def screen(ctx, first_shocks: np.ndarray, batch: int) -> np.ndarray:
    """Per scenario: does its first step's marks put anyone past liquidation? ``batch``
    scenarios per kernel pass."""
    b = ctx.backend
    live = np.zeros(first_shocks.shape[0], dtype=bool)
    for lo in range(0, first_shocks.shape[0], batch):
        flags = account_flags(ctx, first_shocks[lo:lo + batch])
        live[lo:lo + flags.shape[0]] = b.to_host(flags.any(axis=1))
    return live


def account_flags(ctx, shocks: np.ndarray):
    """flags[scenario, account] (int8, on the backend): 1 where the account's cross book or
    one of its isolated positions is liquidatable at the scenario's marks (kernel stress_flags)."""
    book, b, venue, d = ctx.book, ctx.backend, ctx.venue, ctx.dev
    tiers = venue_tiers(b, d, venue)  # deduction amounts as the venue reads them (zero: whole-position rate)
    marks = np.ascontiguousarray(book.mark_price[None, :] * (1 + shocks))
    flags = b.xp.empty(shocks.shape[0] * book.n_accounts, dtype=b.xp.int8)
    b.launch("stress_flags", book.n_accounts, shocks.shape[0], book.n_symbols, d.pos_start, d.pos_symbol, d.size,
             d.entry, d.isolated, d.isolated_margin, d.wallet, b.asarray(marks.ravel()), d.contract_size,
             d.tier_start, d.tier_floor, d.tier_mmr, tiers.cum, int(venue.mm_base == "entry"),
             int(venue.tier_basis == "contracts"), float(venue.close_fee_rate),
             float(venue.margin_call_ratio), float(venue.liquidation_ratio), d.inverse, flags)
    pf = getattr(ctx, "portfolio", None)
    if pf is not None:  # accounts in portfolio mode: their requirement at each scenario's marks
        b.launch("portfolio_stress_flags", book.n_accounts, shocks.shape[0], book.n_symbols, d.pos_start, d.pos_symbol,
                 d.size, d.entry, d.isolated, d.isolated_margin, d.wallet, b.asarray(marks.ravel()), d.contract_size,
                 pf.sym_group, pf.shock_start, pf.shock, pf.offset_rate, pf.liquidity_threshold, pf.liquidity_rate,
                 int(pf.model.groups_move == "joint"), pf.use, float(venue.close_fee_rate),
                 float(venue.margin_call_ratio), float(venue.liquidation_ratio), flags)
    return flags.reshape(shocks.shape[0], book.n_accounts)


def quiet_row(ctx, sid, pol, shock, rec) -> dict:
    book = ctx.book
    marks = book.mark_price * (1 + shock)
    rec.extend(rec.prices, book.n_symbols, scenario=sid, policy=POLICY_CODE[pol], step=0, symbol=ctx.symbol_codes,
               mark_price=marks)
    # Nobody trades: the book's value moves by each symbol's net size times its price move,
    # from per-symbol totals rather than a pass over every position.
    money = ctx.money_marks  # the price itself for linear contracts, −1/P for inverse (gpurisk/ledger.py)
    moved = float(np.sum(ctx.net_size * book.contract_size * (money(marks) - money(book.mark_price))))
    return dict(scenario=sid, policy=pol, steps=0, accounts_liquidated=0, notional_liquidated=0.0, deficit=0.0,
                insurance_used=0.0, insurance_left=ctx.insurance_fund, unfunded=0.0, adl_notional=0.0, adl_accounts=0,
                socialized_loss=0.0, overshoot=0.0, max_haircut_share=0.0, external_value=0.0,
                conservation_error=moved / max(1.0, abs(ctx.start_value)))


