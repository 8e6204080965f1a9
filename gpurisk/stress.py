"""Stress tests (DESIGN §5–§7): price-shock scenarios and multi-step liquidation cascades
over every account, with the deleveraging ladder, the insurance fund, ADL policies and an
external liquidity account that takes whatever is sold into the market.

Money is conserved: with a balanced book, Σ(wallet + isolated margin + upnl) over all
accounts, plus the insurance fund, plus the external liquidity account, is the same before
and after every step (checked on every scenario and reported in the summary).

Scenarios are screened in batches by one kernel pass over the positions per batch
(``stress_flags``); only scenarios that liquidate someone are run step by step.

Polars is needed at the edges only, so the engine runs where only NumPy (and CuPy) are
installed: ``scenario_paths`` turns a scenario frame into arrays, ``run_stress`` runs them and
returns ``StressRecords`` (NumPy arrays), and ``StressRecords.to_result`` builds the frames of
``StressResult``. ``stress`` is the three in a row, except that it builds the frames from the
records' chunks without the concatenated arrays in between (the same frames).

The modules read as the pipeline of a step: scenarios (gpurisk/scenarios.py) → revaluation
(the kernels, through gpurisk/stress_context.py's ``StressContext``) → the ladder
(gpurisk/ladder.py, ``ladder_actions``) → market closes and the takeover, insurance, queue ADL
(the queue's front: gpurisk/queue_front.py) and haircuts (gpurisk/deleverage.py), as money moves
on a ledger (gpurisk/ledger.py) → records (gpurisk/stress_result.py). This module is the loop
(``run_scenario``) and the entry points. Scenario runs are independent and run side by side on
threads (``threads``), the same bits on any count.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .backend import Backend, get_backend
from .book import Book
from .deleverage import settle_queues, take_over_bankrupt
from .funding import funding_steps
from .haircut import settle_haircuts
from .ladder import Ladder, get_ladder, ladder_actions
from .ledger import Ledger
from .impact import Impact, get_impact  # noqa: F401 (Impact: part of the stress API)
from .queue_front import demand_by_queue, queue_front, queue_fronts, queue_fronts_to_demand, rotated_queue
from .scenarios import check_paths, run_ids, scenario_paths
from .screen import quiet_row, screen
from .stress_assets import fund_amount, insurance_funds, run_stress_by_asset, single_fund
from .stress_context import Revaluation, StressContext
from .stress_result import POLICIES, POLICY_CODE, StressRecords, StressResult, _Records
from .venue import Venue, get_venue

# The stress API in one place: scenarios, records and their codes live in their own modules.
from .scenarios import read_scenarios, shock_grid  # noqa: E402,F401
from .stress_result import (ACTIONS, ADL_FILL_COLUMNS, HAIRCUT_COLUMNS, LIQUIDATION_COLUMNS,  # noqa: E402,F401
                            MARGIN_MODES, PRICE_COLUMNS, SUMMARY_COLUMNS)



# ------------------------------------------------------------------ the conservation check

#: a queue owed at most 1/SHALLOW_QUEUE of its open size (in the book as given) is ordered by a
#: selection of its front rather than sorted whole (a matter of speed: both give the same order)
SHALLOW_QUEUE = 16

#: a run's summary.conservation_error beyond this (relative) is a failure; in practice ~1e-16
CONSERVATION_TOLERANCE = 1e-9


def conservation_check(summary, tolerance: float = CONSERVATION_TOLERANCE) -> tuple[int, float]:
    """(runs that fail, largest |conservation_error|) of a stress summary (a frame or
    StressRecords.summary). NaN or ±inf never passes: such a run fails, and the largest error
    is then NaN, not the largest of the others (a plain max skips NaN)."""
    err = np.asarray(summary["conservation_error"], dtype=np.float64)
    failed = int(np.count_nonzero(~(np.abs(err) <= tolerance)))
    if err.size == 0:
        return 0, 0.0
    worst = float(np.max(np.abs(err))) if np.all(np.isfinite(err)) else float("nan")
    return failed, worst


# ------------------------------------------------------------------ one scenario


def _in_limits(marks: np.ndarray) -> np.ndarray:
    """Marks moved by accumulated impact held within the input price limits (a long cascade
    compounds up to 0.99 of a move per step, which would otherwise reach 0 or overflow);
    marks within the limits are returned unchanged, bit for bit."""
    from .schema import PRICE_MAX, PRICE_MIN

    return np.clip(marks, PRICE_MIN, PRICE_MAX)


@dataclass
class _Totals:
    """A run's running totals, for its summary row."""

    accounts_liquidated: np.ndarray
    adl_positions: np.ndarray  # positions ADL or haircuts touched (their accounts counted once, at the end)
    notional_liquidated: float = 0.0
    deficit: float = 0.0
    insurance_used: float = 0.0
    adl_notional: float = 0.0
    socialized_loss: float = 0.0
    haircut_total: float = 0.0
    max_haircut: float = 0.0
    steps: int = 0  # steps that liquidated someone


def run_scenario(ctx: StressContext, scenario, shocks: np.ndarray, policy: str, rec: _Records, steps: int) -> dict:
    """One scenario's path (shocks: step × symbol) under one policy: the cascade, step by
    step (revalue → ladder → market closes → takeover and insurance → ADL or haircuts →
    record), until the path ends and a step liquidates nobody. Returns its summary row."""
    book, lad = ctx.book, ctx.ladder
    ledger = ctx.ledger()  # on the backend's device, for the whole run
    base = book.mark_price
    start_value = ctx.start_value + ledger.fund
    impact_factor = np.ones(book.n_symbols)
    n_path = shocks.shape[0]
    totals = _Totals(np.zeros(book.n_accounts, bool), np.zeros(book.n_positions, bool))
    code = POLICY_CODE[policy]
    rec.extend(rec.prices, book.n_symbols, scenario=scenario, policy=code, step=0, symbol=ctx.symbol_codes,
               mark_price=base * (1 + shocks[0]))
    last_t = 0
    for t in range(max(steps, n_path)):
        marks = _in_limits(base * (1 + shocks[min(t, n_path - 1)]) * impact_factor)
        if ctx.funding is not None:
            ctx.pay_funding(ledger, marks, t)
        r = ctx.revalue(ledger, marks)
        unit_flags = ctx.unit_flags(r)
        in_unit = ctx.backend.to_host(unit_flags).view(bool)
        idx = np.flatnonzero(in_unit)
        last_t = t
        if idx.size == 0:
            if t + 1 >= n_path:
                break
            continue
        totals.steps += 1
        acc = book.pos_account[idx]
        iso = book.isolated[idx] == 1
        iso_at = np.flatnonzero(iso)
        ratio = _per_unit(r, "pos_ratio", "ratio", idx, acc, iso_at)
        equity = _per_unit(r, "pos_equity", "equity", idx, acc, iso_at)

        def restoring(mask, r=r, marks=marks, acc=acc):
            solve = np.zeros(book.n_accounts, dtype=np.int8)
            solve[acc[mask]] = 1
            return ctx.restoring_fraction(ledger, r, solve, marks)[acc]

        size_idx = ledger.take(ledger.size, idx)  # the ladder's and the takeover's sizes, gathered once
        action, qty = ladder_actions(ctx.backend, lad, size_idx, ratio, equity, iso, ledger.partials[acc],
                                     r.take("notional", idx) if lad.partial == "slices" else None, restoring)
        # Execution price: the mark moved by the impact of everything sold this step.
        if ctx.impact is not None:
            flow = np.bincount(book.pos_symbol[idx], weights=np.sign(qty) * ctx.notional(qty, marks[book.pos_symbol[idx]], idx),
                               minlength=book.n_symbols)
            impact_factor = impact_factor * (1 + ctx.impact.move(flow, ctx.depth))
        exec_marks = _in_limits(base * (1 + shocks[min(t, n_path - 1)]) * impact_factor)
        rx = ctx.revalue(ledger, exec_marks) if ctx.impact is not None else r
        eq_exec = equity if rx is r else _per_unit(rx, "pos_equity", "equity", idx, acc, iso_at)
        # A unit bankrupt at execution is taken over whole.
        bust = (action == 2) | (eq_exec <= 0)
        bust_account = np.zeros(book.n_accounts, dtype=bool)
        bust_account[acc[bust & ~iso]] = True
        bust = np.where(iso, bust, bust_account[acc])
        action[bust] = 2
        qty[bust] = size_idx[bust]
        p_exec = exec_marks[book.pos_symbol[idx]]
        # Market closes (reductions and liquidations of solvent units).
        solvent = ~bust
        if solvent.any():
            ledger.close_to_market(idx[solvent], qty[solvent], p_exec[solvent])
            ledger.partials[np.unique(acc[solvent & (action == 0)])] += 1
        # Takeovers: insurance fund first (most underwater first), then ADL.
        _settle(ctx, ledger, rx, idx[bust], exec_marks, policy, (in_unit, unit_flags), totals, rec,
                dict(scenario=scenario, policy=code, step=t))
        ledger.release_isolated(idx[iso])  # only isolated positions hold margin to release
        totals.notional_liquidated += float(ctx.notional(qty, p_exec, idx).sum())
        totals.accounts_liquidated[acc] = True
        if rec.detail:
            rec.extend(rec.liq, idx.size, scenario=scenario, policy=code, step=t, account_id=book.account_id[acc],
                       symbol=book.pos_symbol[idx].astype(np.int32), margin_mode=iso.astype(np.int8),
                       action=np.where(bust & (eq_exec > 0), 2, np.where(bust, 3, action)).astype(np.int8),
                       margin_ratio=ratio, qty=np.abs(qty), price=np.where(bust, rx.take("bp", idx), p_exec))
        rec.extend(rec.prices, book.n_symbols, scenario=scenario, policy=code, step=t + 1, symbol=ctx.symbol_codes,
                   mark_price=exec_marks)
    final_marks = _in_limits(base * (1 + shocks[min(last_t, n_path - 1)]) * impact_factor)
    end_value = ctx.value(ledger, final_marks)
    scale = max(abs(start_value), ctx.entry_notional, 1.0)
    return dict(
        scenario=scenario, policy=policy, steps=totals.steps,
        accounts_liquidated=int(totals.accounts_liquidated.sum()),
        notional_liquidated=totals.notional_liquidated, deficit=totals.deficit,
        insurance_used=totals.insurance_used, insurance_left=ledger.fund,
        # What the fund paid beyond what it had: no counterparty or haircut could cover it.
        unfunded=max(0.0, -ledger.fund),
        adl_notional=totals.adl_notional, adl_accounts=_accounts_of(book, totals.adl_positions),
        socialized_loss=totals.socialized_loss,
        overshoot=max(0.0, totals.haircut_total - totals.socialized_loss),
        max_haircut_share=(totals.max_haircut / totals.haircut_total) if totals.haircut_total > 0 else 0.0,
        external_value=ledger.external_value(final_marks),
        conservation_error=(end_value - start_value) / scale,
    )


def _accounts_of(book: Book, positions: np.ndarray) -> int:
    """Accounts holding at least one of the marked positions. Marking positions as a step
    touches them and counting their accounts once per run spares a scattered gather of each
    counterparty's account per step (this one reads the book's accounts in storage order)."""
    if not positions.any():
        return 0
    held = np.zeros(book.n_accounts, dtype=bool)
    held[book.pos_account[np.flatnonzero(positions)]] = True
    return int(np.count_nonzero(held))


def _per_unit(r: Revaluation, position_result: str, account_result: str, idx: np.ndarray, acc: np.ndarray,
              iso_at: np.ndarray) -> np.ndarray:
    """A unit's result for each position idx: the account's (acc) for cross positions, the
    position's own at iso_at (the isolated ones' places in idx). Each row is gathered from
    one of the two results only."""
    out = r.take(account_result, acc)
    out[iso_at] = r.take(position_result, idx[iso_at])
    return out


def _queue_fronts(ctx: StressContext, ledger: Ledger, rx: Revaluation, queues, parts, rest, counterparty) -> list:
    """The opposite queue of each queue a step deleverages into, in ADL order, at least as
    deep as its demand. A queue owed by few positions is ordered by a selection of its best
    scores (queue_front), the others together in one sort (queue_fronts); both give the same
    order. dYdX-style venues rotate the queue instead (rotated_queue). The cpu backend orders
    ranked queues by ``queue_fronts_to_demand`` instead (one native call, the same order). A
    ledger on a device has its queues ordered there, whole (the fronts stay on the device; the
    settlement copies them only as deep as it uses them); ``counterparty`` lives with the
    ledger's sizes."""
    opposite = queues ^ 1
    b = ctx.backend
    if ctx.venue.adl_score == "random":
        keep = b.to_host(counterparty)
        return [rotated_queue(ctx.members[g], keep, ctx.venue.adl_seed, int(g)) for g in opposite]
    if ledger.on_device:
        order, start = queue_fronts(b, ctx.dev.group, rx.device("score"), counterparty, opposite,
                                    2 * ctx.book.n_symbols)
        return [order[start[g]:start[g + 1]] for g in opposite]
    demand = np.array([np.abs(rest[p]).sum() for p in parts])
    shallow = demand * SHALLOW_QUEUE <= ctx.queue_size[opposite]
    fronts = [None] * len(parts)
    if (~shallow).any():
        order, start = queue_fronts(ctx.backend, ctx.group, rx.score, counterparty, opposite[~shallow],
                                    2 * ctx.book.n_symbols)
        for k in np.flatnonzero(~shallow):
            fronts[k] = order[start[opposite[k]]:start[opposite[k] + 1]]
    for k in np.flatnonzero(shallow):
        fronts[k] = queue_front(ctx.members[opposite[k]], rx.score, counterparty, ledger.size,
                                float(np.cumsum(np.abs(rest[parts[k]]))[-1]))
    return fronts


def _settle(ctx: StressContext, ledger: Ledger, rx: Revaluation, pos: np.ndarray, exec_marks: np.ndarray, policy: str,
            units: tuple, totals: _Totals, rec: _Records, labels: dict) -> None:
    """Bankrupt positions ``pos``: taken over, the insurance fund first, then what it cannot
    pay deleveraged queue by queue (by ADL queue or by haircuts). ``units``: the step's unit
    flags, on the host (bool) and on the device (int8)."""
    if pos.size == 0:
        return
    book = ctx.book
    bp = rx.take("bp", pos)
    taken = take_over_bankrupt(ctx.backend, ledger, pos, bp, exec_marks[book.pos_symbol[pos]])
    totals.deficit += taken.deficit
    totals.insurance_used += taken.covered  # backstop gains are not netted in
    taken.rest, taken.unit_rank = ctx.backend.to_host(taken.rest), ctx.backend.to_host(taken.unit_rank)
    queues, parts = demand_by_queue(ctx.order, ctx.group[pos], taken.rest, taken.unit_rank)
    if not parts:
        return
    # A queue's counterparties are its open positions not being liquidated; one queue's
    # fills never open or close another queue's counterparties, so they are found once
    # (where the sizes are: on the device for a device ledger).
    in_unit, unit_flags = units
    counterparty = (ledger.size != 0.0) & (unit_flags == 0 if ledger.on_device else ~in_unit)
    rest = taken.rest
    if policy == "queue":
        owed = np.concatenate(parts)
        sizes = np.array([p.size for p in parts])
        ends = np.cumsum(sizes)
        symbols = queues // 2
        bounds = np.stack([ends - sizes, ends], 1)
        supplies = None
        if ctx.backend.name == "cpu" and ctx.venue.adl_score != "random":
            # Each opposite queue ordered exactly as deep as its demand, in one native pass.
            fronts, supplies = queue_fronts_to_demand(ctx.group32, queues ^ 1, 2 * book.n_symbols,
                                                      np.abs(rest[owed]), bounds, rx.score, counterparty, ledger.size)
        else:
            fronts = _queue_fronts(ctx, ledger, rx, queues, parts, rest, counterparty)
        settled = settle_queues(ctx.backend, ledger, pos[owed], rest[owed], bp[owed], bounds, fronts,
                                exec_marks[symbols], book.contract_size[symbols], supplies)
        # The run's totals add queue by queue, in order (the bits of the sums depend on it).
        for k in range(len(parts)):
            totals.socialized_loss += float(settled.socialized[k])
            totals.haircut_total += float(settled.socialized[k])
            if settled.filled[k]:
                totals.max_haircut = max(totals.max_haircut, float(settled.max_loss[k]))
            totals.adl_notional += float(settled.notional[k])
            if settled.fund_takes[k]:
                totals.insurance_used += float(settled.fund_took[k])
        totals.adl_positions[settled.counterparties] = True
        if rec.detail:
            queue, bankrupt, counterparty, qty, price = settled.fills()
            rec.extend(rec.fills, qty.size, **labels, symbol=symbols[queue].astype(np.int32),
                       bankrupt_account_id=ctx.position_account_id[bankrupt],
                       counterparty_account_id=ctx.position_account_id[counterparty], qty=qty, price=price)
        return
    # Haircut policies: the fund takes the positions over and recovers the loss from the
    # opposite side's positive PnL, every queue in one kernel (gpurisk/haircut.py).
    owed = np.concatenate(parts)
    sizes = np.array([p.size for p in parts])
    ends = np.cumsum(sizes)
    symbols = queues // 2
    opposite = queues ^ 1
    cuts = settle_haircuts(ctx.backend, ledger, policy, pos[owed], rest[owed], bp[owed],
                           np.stack([ends - sizes, ends], 1), ctx.device_queue_members,
                           np.stack([ctx.queue_start[opposite], ctx.queue_start[opposite + 1]], 1), counterparty,
                           rx.device("upnl"), rx.device("notional"), rx.device("pos_equity"), exec_marks[symbols],
                           book.contract_size[symbols])
    # The run's totals add queue by queue, in order (the bits of the sums depend on it).
    for k in range(len(parts)):
        recovered = float(cuts.recovered[k])
        totals.socialized_loss += recovered
        totals.insurance_used += float(cuts.need[k]) - recovered  # what the haircuts did not recover
        totals.haircut_total += recovered
        totals.max_haircut = max(totals.max_haircut, float(cuts.max_cut[k]))
    totals.adl_positions[cuts.positions] = True
    if rec.detail:
        rec.extend(rec.cuts, cuts.positions.size, **labels,
                   symbol=np.repeat(symbols, cuts.n_cut).astype(np.int32),
                   account_id=ctx.position_account_id[cuts.positions], amount=cuts.amount)


# ------------------------------------------------------------------ public entry point


def stress(book: Book, scenarios, venue: "str | Venue" = "binance", backend: "str | Backend" = "auto",
           insurance_fund: "float | dict" = 0.0, policy="queue", steps: int = 1, impact=None,
           ladder: "str | Ladder | None" = None, batch: int = 64, progress: bool | None = None,
           detail: bool = True, threads: int | None = None, funding=None) -> StressResult:
    """Run every scenario through the deleveraging sequence; see the module docstring.
    ``scenario_paths``, then ``run_stress``, then the frames.

    scenarios: a (scenario, symbol, shock[, step]) frame of relative mark moves, e.g.
        ``shock_grid(-0.5, 0.5, 1000)``; a ``step`` column gives multi-step price paths.
    policy: ``"queue"`` (the venue's ADL ranking), ``"pro_rata"``, ``"capped_pro_rata"``,
        ``"rap"``, or a list of them (each scenario is run once per policy).
    steps: cascade steps (liquidations move prices through ``impact``); stops early when a
        step liquidates nobody.
    ladder: a Ladder or preset name; default the venue's.
    insurance_fund: the fund at the start, in the book's asset; a book with wallets or markets
        in several assets (inverse contracts) takes {asset: amount} (assets left out: 0) and is
        stressed per asset, its tables with an ``asset`` column (gpurisk/stress_assets.py,
        ``StressResult.for_asset``).
    detail: keep every liquidation, ADL fill and haircut (False: the summary and price paths
        only, for grids of thousands of scenarios whose fills would run to hundreds of millions
        of rows; rerun the scenarios of interest with detail).
    funding: rates paid before each step's revaluation, at that step's marks (gpurisk/funding.py):
        {symbol: rate} or a (symbol, funding_rate) frame at every step, a frame with a ``step``
        column at the steps it lists, or an array (steps, symbols). None: no funding.
    threads: scenario runs at a time (default: one per CPU core on the cpu backend, one on
        the gpu). The results are the same bits on any count; each run in flight holds its own
        copy of the book's balances and a revaluation (about 150 bytes per position; a haircut
        policy's kernel keeps about 90 more per position of work arrays per thread).
    """
    insurance_funds(book, insurance_fund)  # a number, or {asset: amount} (gpurisk/stress_assets.py)
    venue, be, lad, imp, policies = _options(venue, backend, ladder, impact, policy, steps, 0.0)
    labels, shocks = scenario_paths(book, scenarios)
    options = dict(venue=venue, backend=be, insurance_fund=insurance_fund, policy=policies, steps=steps, impact=imp,
                   ladder=lad, batch=batch, progress=progress, detail=detail, threads=threads, funding=funding)
    if len(book.assets) > 1:
        return run_stress(book, run_ids(labels), shocks, **options).to_result(scenario_labels=labels)
    book.require_per_asset("stress", venue)
    rec, timings = _run_records(book, run_ids(labels), shocks, **options)
    return rec.frames(book.symbols, timings, scenario_labels=labels, assets=book.assets)  # no StressRecords between


def run_stress(book: Book, scenario_ids, shocks, venue: "str | Venue" = "binance",
               backend: "str | Backend" = "auto", insurance_fund: "float | dict" = 0.0, policy="queue", steps: int = 1,
               impact=None, ladder: "str | Ladder | None" = None, batch: int = 64, progress: bool | None = None,
               detail: bool = True, threads: int | None = None, funding=None) -> StressRecords:
    """``stress`` on arrays, without Polars: the same options and the same numbers, as
    StressRecords.

    scenario_ids: 1-D integer array (int64), one distinct id per scenario.
    shocks: float64 array (scenario, step, symbol) of relative moves of the book's marks, one
        row per id, each finite and > -1 (what ``scenario_paths`` returns). Bad arrays raise a
        BookError naming each problem before anything is computed.
    """
    # One insurance fund, one external account, one conservation sum per asset (inverse
    # contracts settled in it included; README "Inverse contracts"): several run side by side.
    book.require_per_asset("stress", venue)
    if len(book.assets) > 1:
        _options(venue, backend, ladder, impact, policy, steps, 0.0)  # bad options refused before any run
        return run_stress_by_asset(run_stress, book, scenario_ids, shocks, insurance_fund=insurance_fund,
                                   funding=funding, impact=impact, policy=policy, steps=steps, venue=venue,
                                   backend=backend, ladder=ladder, batch=batch, progress=progress, detail=detail,
                                   threads=threads)
    rec, timings = _run_records(book, scenario_ids, shocks, venue, backend, insurance_fund, policy, steps, impact,
                                ladder, batch, progress, detail, threads, funding)
    records = rec.finish(book.symbols, timings)
    records.assets = tuple(book.assets)
    return records


def _run_records(book: Book, scenario_ids, shocks, venue, backend, insurance_fund, policy, steps, impact, ladder,
                 batch, progress, detail, threads, funding) -> tuple[_Records, dict]:
    """``run_stress`` of a book in one asset, up to its records and timings (``_Records``:
    ``finish`` makes them StressRecords, ``frames`` the frames)."""
    insurance_fund = single_fund(book, insurance_fund)
    venue, be, lad, imp, policies = _options(venue, backend, ladder, impact, policy, steps, insurance_fund)
    steps = int(steps)
    ids, shocks = check_paths(book, scenario_ids, shocks)
    funding_rates = funding_steps(book, funding, max(steps, shocks.shape[1]))
    if imp is not None:
        imp.depths(book)  # a depth dict naming a symbol the book lacks: refused before any compute
    batch = _whole(batch, "batch", 1, 1 << 20)
    threads = default_threads(be) if threads is None else _whole(threads, "threads", 1, 1024)
    t0 = time.perf_counter()
    ctx = StressContext(book, venue, be, lad, imp, insurance_fund)
    ctx.funding = funding_rates
    rec = _Records(detail)
    # Screen: one kernel pass over the positions per batch of scenarios finds those where
    # somebody is liquidatable at the first step's marks.
    live = screen(ctx, shocks[:, 0, :], batch)
    multi = shocks.shape[1] > 1
    show = sys.stderr.isatty() if progress is None else progress
    n_total = len(ids) * len(policies)
    done = 0

    def one(task):
        k, sid, pol = task
        own = _Records(detail)
        if live[k] or multi or funding_rates is not None:  # funding moves wallets: run every step
            row = run_scenario(ctx, sid, shocks[k], pol, own, steps)
        else:
            row = quiet_row(ctx, sid, pol, shocks[k, 0], own)
        own.add_summary(row)
        return own

    tasks = [(k, sid, pol) for k, sid in enumerate(ids) for pol in policies]
    # Runs are independent, and most of a run's host work releases the GIL: runs proceed
    # side by side on threads, each with its own state and records, taken in task order.
    for own in _in_order(one, tasks, threads):
        rec.take(own)
        done += 1
        if show and (done % max(1, n_total // 100) == 0 or done == n_total):
            print(f"\r  stress: {done:,}/{n_total:,} scenario runs", end="", file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
    elapsed = time.perf_counter() - t0
    return rec, {"seconds": elapsed, "scenarios": len(ids), "screened_quiet": int((~live).sum()), "threads": threads}


def _in_order(fn, tasks: list, threads: int):
    """fn over tasks, ``threads`` at a time, results yielded in task order. At most twice as
    many tasks as threads are in flight, so an error or an interrupt stops the run soon (the
    tasks not yet started are cancelled) and finished results never pile up."""
    if threads == 1:
        yield from map(fn, tasks)
        return
    window = 2 * threads
    with ThreadPoolExecutor(threads, thread_name_prefix="gpurisk-stress") as pool:
        pending = deque(pool.submit(fn, t) for t in tasks[:window])
        following = iter(tasks[window:])
        try:
            while pending:
                result = pending.popleft().result()
                nxt = next(following, None)
                if nxt is not None:
                    pending.append(pool.submit(fn, nxt))
                yield result
        finally:
            for f in pending:
                f.cancel()


def default_threads(backend: Backend) -> int:
    """Scenario runs at a time: one per CPU core this process may use on the cpu backend (the
    host work of one run is mostly single-threaded NumPy); one on the gpu, whose runs share a
    device stream."""
    if backend.name != "cpu":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 16))


def _whole(value, name: str, lo: int, hi: int) -> int:
    """An integer option in [lo, hi]; ValueError otherwise (a fraction, text, bool, NaN)."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok and isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        ok, value = True, int(value)
    if not ok or not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be a whole number in [{lo:,}, {hi:,}], got {value!r}")
    return int(value)


def _options(venue, backend, ladder, impact, policy, steps, insurance_fund):
    """The run's venue, backend, ladder, impact and policy list; ValueError on a bad option."""
    from .schema import MAX_STEPS

    venue = get_venue(venue)
    be = get_backend(backend)
    lad = get_ladder(ladder, venue.name)
    imp = get_impact(impact)
    policies = [policy] if isinstance(policy, str) else list(policy)
    if not policies:
        raise ValueError(f"policy needs at least one of {', '.join(POLICIES)}")
    for p in policies:
        if p not in POLICIES:
            raise ValueError(f"unknown policy {p!r}; choose from {', '.join(POLICIES)}")
    twice = sorted({p for p in policies if policies.count(p) > 1})
    if twice:
        raise ValueError(f"policy lists {', '.join(map(repr, twice))} more than once; each policy runs once "
                         "per scenario")
    _whole(steps, "steps", 1, MAX_STEPS)
    if lad.partial == "target" and (venue.tier_basis != "notional" or venue.tier_rate != "deduction"
                                    or (venue.close_fee_rate > 0 and venue.mm_base == "entry")):
        raise ValueError(f"a ladder that reduces to a target ratio is solved for tiers on notional with "
                         f"deductions and a close fee on the MM notional; venue {venue.name!r} has "
                         f"tier_basis={venue.tier_basis!r}, tier_rate={venue.tier_rate!r}, "
                         f"close_fee_rate={venue.close_fee_rate!r}, mm_base={venue.mm_base!r}: use a ladder "
                         "with partial='slices' or 'none'")
    fund_amount(insurance_fund)
    return venue, be, lad, imp, policies
