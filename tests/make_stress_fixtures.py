"""Freeze today's stress results as fixtures: ``python tests/make_stress_fixtures.py``.

Runs ``gpurisk.stress.run_stress`` on the ``cpu`` backend for every case of ``CASES`` and writes
``tests/fixtures/stress/<case>.npz`` (every array of ``gpurisk.parity.stress_arrays``: the
summary and every liquidation, ADL fill, haircut and price row) and ``cases.json`` (the recipe
of each case: book, venue, ladder, policies, steps, impact, insurance fund, scenarios, so that
``tests/test_stress_fixtures.py`` rebuilds the inputs exactly). Every file is written
atomically (a temporary name in the same folder, then ``os.replace``).

Each case asserts that it exercises what it claims (``expect``): ADL fills for the queue,
haircut rows for the haircut policies, ``reduce`` actions for a partial ladder, a backstop,
several steps for a cascade, scenarios screened out as quiet, positions past the fourth tier
on the deep-tier book, ...

Regenerate only deliberately: the point of these files is that they do NOT follow the engine.
See the docstring of tests/test_stress_fixtures.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from gpurisk import Book, synthetic_book  # noqa: E402
from gpurisk.ladder import Ladder  # noqa: E402
from gpurisk.parity import scenario_arrays, stress_arrays  # noqa: E402
from gpurisk.stress import ACTIONS, POLICIES, POLICY_CODE, run_stress  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stress"
FROZEN_ON = "2026-11-28"
BATCH = 64  # screening batch the fixtures were made with (run_stress's default)

# A ten-tier ladder (the shape of Binance's BTCUSDT table, floors divided by 50) on every symbol
# of the deep-tier book: ordinary synthetic notionals reach tiers 4..9, past the first
# gpurisk.engine.TIER_LOOKAHEAD (3 today) boundaries that the kernels count before they walk.
DEEP_FLOORS = [0.0, 1_000.0, 5_000.0, 20_000.0, 100_000.0, 200_000.0, 400_000.0, 1_000_000.0, 2_000_000.0,
               4_000_000.0]
DEEP_MMR = [0.004, 0.005, 0.01, 0.025, 0.05, 0.1, 0.125, 0.15, 0.25, 0.5]
DEEP_MAX_LEVERAGE = [125.0, 100.0, 50.0, 20.0, 10.0, 5.0, 4.0, 3.0, 2.0, 1.0]
DEEP_TIER = 4  # "deep": tier index (from 0) at least this, past the counted boundaries

BOOKS = {
    # synthetic_book's defaults (15% isolated, 6% stressed); BTCUSDT has 10 tiers there too.
    "balanced": {"kind": "synthetic", "n_accounts": 1500, "seed": 3},
    "isolated": {"kind": "synthetic", "n_accounts": 1200, "seed": 5, "isolated_share": 0.5},
    # heavy-tailed and thin: a third of the traders run wallets of 0.05-0.7x their margin.
    "stressed": {"kind": "synthetic", "n_accounts": 1000, "seed": 7, "stressed_share": 0.35},
    # synthetic_book's accounts and positions on DEEP_* ladders (every symbol), via Book.from_frames.
    "deep": {"kind": "deep_tiers", "n_accounts": 900, "seed": 11, "floors": DEEP_FLOORS, "mmr": DEEP_MMR,
             "max_leverage": DEEP_MAX_LEVERAGE},
    # wallets and isolated margins x6: nobody is liquidatable under small moves, so the
    # screening pass leaves those scenarios out (the quiet-row path).
    "calm": {"kind": "collateral_scaled", "n_accounts": 800, "seed": 13, "factor": 6.0},
}

ODD_DOWN = [1.0, 0.7]  # symbol factors, cycled over the symbols (as parity.scenario_arrays)
CRASH_REBOUND = [0.3, 0.7, 1.0, 0.75, 0.5, 0.85]  # a 6-step path: fractions of the level
GRADUAL = [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0]  # the level reached in six even steps

# Each case: book, venue, ladder (None: the venue's; a preset name; or a dict of Ladder
# fields, {} being Ladder() = no partials), policies, steps, impact, insurance fund,
# scenarios, and what the case must exercise (``expect``, checked by ``check_expectations``).
# scenarios: {"ids", "levels", "path": fractions per step or None, "symbol_factor"}:
#   shocks[k, t, j] = levels[k] * path[t] * symbol_factor[j % len]   (path None: one step, fraction 1)
# or {"ids", "shocks": [[[...symbol] ...step] ...scenario]} given outright.
# Venues "binance_adl_2019" and "hyperliquid_side_2025": the ADL rules these fixtures were frozen
# with (issue 14 made the current rules the presets' defaults); the ladders are those venues' own.
CASES = [
    dict(name="balanced_binance_target_all_policies", book="balanced", venue="binance_adl_2019", ladder=None,
         policy=list(POLICIES), steps=1, impact=None, insurance_fund=2e5,
         scenarios=dict(ids=[0, 1, 2, 3, 4, 5], levels=[-0.4, -0.18, -0.004, 0.003, 0.12, 0.3], path=None,
                        symbol_factor=ODD_DOWN),
         expect=["adl_fills", "haircuts", "reduce", "takeover", "insurance_used", "heavy"]),
    dict(name="balanced_bybit_own_ladder_fund0", book="balanced", venue="bybit", ladder=None,
         policy=["queue", "pro_rata"], steps=1, impact=None, insurance_fund=0.0,
         scenarios=dict(ids=[0, 1, 2, 3], levels=[-0.4, -0.15, 0.002, 0.25], path=None, symbol_factor=ODD_DOWN),
         expect=["adl_fills", "haircuts", "takeover", "no_reduce", "heavy"]),
    # Slices need positions above 100k notional whose ratio is in [1, 1.5) when they are hit
    # and that stay solvent at execution: gradual six-step paths and a deep market.
    dict(name="balanced_bybit_hyperliquid_ladder_linear_path", book="balanced", venue="bybit",
         ladder="hyperliquid", policy=["queue"], steps=6,
         impact={"model": "linear", "coefficient": 0.02, "depth_share": 1.0}, insurance_fund=5e4,
         scenarios=dict(ids=[0, 1, 2, 3], levels=[-0.3, -0.06, 0.12, 0.3], path=GRADUAL, symbol_factor=ODD_DOWN),
         expect=["adl_fills", "reduce", "backstop", "takeover", "multi_step", "impact_moves_prices", "heavy"]),
    dict(name="isolated_hyperliquid_slices_backstop_sqrt_cascade", book="isolated", venue="hyperliquid_side_2025",
         ladder=None, policy=["queue", "rap"], steps=6,
         impact={"model": "sqrt", "coefficient": 0.02, "depth_share": 1.0}, insurance_fund=0.0,
         scenarios=dict(ids=[0, 1, 2], levels=[-0.4, -0.2, 0.12], path=GRADUAL, symbol_factor=ODD_DOWN),
         expect=["adl_fills", "haircuts", "reduce", "backstop", "takeover", "multi_step", "impact_moves_prices",
                 "isolated_units", "heavy"]),
    dict(name="isolated_hyperliquid_ladder_off", book="isolated", venue="hyperliquid_side_2025", ladder={},
         policy=["capped_pro_rata"], steps=1, impact=None, insurance_fund=3e4,
         scenarios=dict(ids=[0, 1, 2, 3], levels=[-0.4, -0.1, 0.005, 0.3], path=None, symbol_factor=ODD_DOWN),
         expect=["haircuts", "takeover", "no_reduce", "isolated_units", "insurance_used", "heavy"]),
    dict(name="stressed_bitmex_binance_ladder_linear_6step", book="stressed", venue="bitmex", ladder="binance",
         policy=["pro_rata", "capped_pro_rata"], steps=6, impact="linear", insurance_fund=5e4,
         scenarios=dict(ids=[0, 1, 2], levels=[-0.4, -0.15, 0.18], path=CRASH_REBOUND, symbol_factor=ODD_DOWN),
         expect=["haircuts", "reduce", "takeover", "multi_step", "impact_moves_prices", "insurance_used",
                 "heavy"]),
    dict(name="stressed_bitmex_own_ladder_queue", book="stressed", venue="bitmex", ladder=None,
         policy=["queue"], steps=1, impact=None, insurance_fund=1e5,
         scenarios=dict(ids=[0, 1, 2, 3], levels=[-0.4, -0.2, -0.003, 0.3], path=None, symbol_factor=ODD_DOWN),
         expect=["adl_fills", "takeover", "no_reduce", "insurance_used", "heavy"]),
    dict(name="stressed_dydx_random_queue_sqrt_cascade", book="stressed", venue="dydx", ladder=None,
         policy=["queue"], steps=3, impact={"model": "sqrt", "coefficient": 0.2}, insurance_fund=0.0,
         scenarios=dict(ids=[0, 1, 2], levels=[-0.4, -0.22, 0.25], path=None, symbol_factor=ODD_DOWN),
         expect=["adl_fills", "takeover", "no_reduce", "multi_step", "impact_moves_prices", "heavy"]),
    dict(name="deep_binance_target_all_policies_sqrt_path", book="deep", venue="binance_adl_2019", ladder=None,
         policy=list(POLICIES), steps=3, impact="sqrt", insurance_fund=1e5,
         scenarios=dict(ids=[0, 1, 2, 3], levels=[-0.4, -0.04, 0.05, 0.2], path=[0.5, 1.0, 1.0],
                        symbol_factor=ODD_DOWN),
         expect=["adl_fills", "haircuts", "reduce", "takeover", "multi_step", "impact_moves_prices", "deep_tier",
                 "insurance_used", "heavy"]),
    dict(name="deep_binance_ladder_off_queue", book="deep", venue="binance_adl_2019", ladder={},
         policy=["queue"], steps=1, impact=None, insurance_fund=0.0,
         scenarios=dict(ids=[0, 1, 2, 3], levels=[-0.4, -0.1, 0.004, 0.15], path=None, symbol_factor=ODD_DOWN),
         expect=["adl_fills", "takeover", "no_reduce", "deep_tier", "heavy"]),
    dict(name="calm_binance_quiet_screening", book="calm", venue="binance_adl_2019", ladder=None,
         policy=["queue", "pro_rata"], steps=1, impact=None, insurance_fund=1e4,
         scenarios=dict(ids=[901, 17, 5, 300, 42], levels=[-0.003, 0.002, -0.4, 0.004, -0.75], path=None,
                        symbol_factor=ODD_DOWN),
         expect=["quiet", "takeover", "adl_fills", "haircuts", "insurance_used"]),
    dict(name="balanced_dydx_per_symbol_path_rap_linear", book="balanced", venue="dydx", ladder=None,
         policy=["rap", "queue"], steps=5, impact="linear", insurance_fund=2.5e4,
         # BTC and ETH crash over two steps while the alts drift up, then a second scenario
         # mirrored; steps 3-5 continue at the last shocks through the impact of the flow.
         scenarios=dict(ids=[0, 1], shocks=[
             [[-0.2, -0.15, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
              [-0.4, -0.3, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]],
             [[0.1, 0.1, 0.1, 0.1, -0.2, -0.2, -0.2, -0.2, -0.2, -0.2],
              [0.15, 0.15, 0.15, 0.15, -0.4, -0.4, -0.4, -0.4, -0.4, -0.4]]]),
         expect=["adl_fills", "haircuts", "takeover", "no_reduce", "multi_step", "impact_moves_prices", "heavy"]),
]


# ------------------------------------------------------------------ inputs


def build_book(recipe: dict) -> Book:
    """The book a recipe of ``BOOKS`` (as stored in cases.json) describes."""
    kind = recipe["kind"]
    opts = {k: v for k, v in recipe.items() if k not in ("kind", "n_accounts", "seed", "floors", "mmr",
                                                          "max_leverage", "factor")}
    base = synthetic_book(recipe["n_accounts"], seed=recipe["seed"], **opts)
    if kind == "synthetic":
        return base
    import polars as pl

    frames = base.frames()
    if kind == "deep_tiers":
        floors, mmr, lev = recipe["floors"], recipe["mmr"], recipe["max_leverage"]
        symbols = frames["markets"]["symbol"].to_list()
        tiers = pl.DataFrame({"symbol": [s for s in symbols for _ in floors],
                              "notional_floor": [float(f) for _ in symbols for f in floors],
                              "maint_margin_rate": [float(m) for _ in symbols for m in mmr],
                              "max_leverage": [float(x) for _ in symbols for x in lev]})  # maint_amount derived
        return Book.from_frames(markets=frames["markets"], tiers=tiers, accounts=frames["accounts"],
                                positions=frames["positions"])
    if kind == "collateral_scaled":
        f = float(recipe["factor"])
        accounts = frames["accounts"].with_columns(pl.col("wallet_balance") * f)
        positions = frames["positions"].with_columns(pl.col("isolated_margin") * f)
        return Book.from_frames(markets=frames["markets"], tiers=frames["tiers"], accounts=accounts,
                                positions=positions)
    raise ValueError(f"unknown book kind {kind!r}")


def build_scenarios(book: Book, recipe: dict) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64, shocks float64 [scenario, step, symbol]) from a scenario recipe."""
    ids = np.asarray(recipe["ids"], dtype=np.int64)
    if "shocks" in recipe:
        shocks = np.array(recipe["shocks"], dtype=np.float64)
    elif "grid" in recipe:  # gpurisk.parity.scenario_arrays' grid (kept for future cases)
        g = recipe["grid"]
        _, shocks = scenario_arrays(book, g["n"], g["steps"], g["path"], g["lo"], g["hi"])
    else:
        levels = np.asarray(recipe["levels"], dtype=np.float64)
        frac = np.asarray(recipe["path"] if recipe["path"] is not None else [1.0], dtype=np.float64)
        factor = np.resize(np.asarray(recipe["symbol_factor"], dtype=np.float64), book.n_symbols)
        shocks = levels[:, None, None] * frac[None, :, None] * factor[None, None, :]
    return ids, np.ascontiguousarray(shocks)


def build_ladder(spec):
    """None (the venue's own), a preset name, or a dict of Ladder fields ({} = Ladder(): none)."""
    if spec is None or isinstance(spec, str):
        return spec
    return Ladder(**spec)


def run_case(case: dict, book: Book, backend="cpu", batch: int = BATCH, detail: bool = True, threads: int = 1):
    """``run_stress`` on one case (as stored in cases.json): StressRecords."""
    ids, shocks = build_scenarios(book, case["scenarios"])
    return run_stress(book, ids, shocks, venue=case["venue"], backend=backend,
                      insurance_fund=case["insurance_fund"], policy=case["policy"], steps=case["steps"],
                      impact=case["impact"], ladder=build_ladder(case["ladder"]), batch=batch, progress=False,
                      detail=detail, threads=threads)


def fingerprint(*arrays) -> str:
    """sha256 over the bytes, dtypes and shapes of arrays: tells a changed input from a changed engine."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def book_fingerprint(book: Book) -> str:
    return fingerprint(np.frombuffer("\0".join(book.symbols).encode(), np.uint8), book.mark_price,
                       book.contract_size, book.tier_start, book.tier_floor, book.tier_mmr, book.tier_cum,
                       book.tier_max_leverage, book.account_id, book.wallet, book.pos_start, book.pos_account,
                       book.pos_symbol, book.size, book.entry, book.isolated, book.isolated_margin, book.leverage)


# ------------------------------------------------------------------ what a case must exercise


def check_expectations(case: dict, book: Book, records) -> list[str]:
    """The claims of ``case["expect"]`` that the records do not bear out (empty: all hold)."""
    failed = []
    s, liq, fills, cuts, prices = (records.summary, records.liquidations, records.adl_fills, records.haircuts,
                                   records.prices)
    actions = {ACTIONS[a] for a in np.unique(liq["action"])}
    for claim in case["expect"]:
        if claim == "adl_fills":
            ok = "queue" in case["policy"] and (fills["policy"] == POLICY_CODE["queue"]).any()
        elif claim == "haircuts":
            hp = [p for p in case["policy"] if p != "queue"]
            ok = bool(hp) and all((cuts["policy"] == POLICY_CODE[p]).any() for p in hp)
        elif claim in ACTIONS:
            ok = claim in actions
        elif claim == "no_reduce":
            ok = "reduce" not in actions
        elif claim == "multi_step":
            ok = int(s["steps"].max()) > 1 and int(prices["step"].max()) > 1
        elif claim == "impact_moves_prices":
            # some executed mark is off the path's own mark (base x (1 + shock)) at that step
            ids, shocks = build_scenarios(book, case["scenarios"])
            k = np.searchsorted(np.sort(ids), prices["scenario"])
            k = np.argsort(ids)[k]
            t = np.minimum(np.maximum(prices["step"] - 1, 0), shocks.shape[1] - 1)
            path_mark = book.mark_price[prices["symbol"]] * (1 + shocks[k, t, prices["symbol"]])
            ok = bool(np.any((prices["step"] > 0) & (np.abs(prices["mark_price"] / path_mark - 1) > 1e-9)))
        elif claim == "insurance_used":
            ok = bool((s["insurance_used"] > 0).any())
        elif claim == "quiet":
            ok = records.timings["screened_quiet"] > 0 and bool((s["steps"] == 0).any()) \
                and bool((s["steps"] > 0).any())
        elif claim == "isolated_units":
            ok = bool((liq["margin_mode"] == 1).any())
        elif claim == "heavy":
            ok = int(s["accounts_liquidated"].max()) >= 0.05 * book.n_accounts
        elif claim == "deep_tier":
            ok = _deep_tier_liquidations(book, liq) > 0
        else:
            raise ValueError(f"unknown claim {claim!r}")
        if not ok:
            failed.append(claim)
    return failed


def _deep_tier_liquidations(book: Book, liq: dict) -> int:
    """Liquidation rows whose position, at its execution price, is in tier DEEP_TIER or deeper."""
    sym = liq["symbol"]
    notional = liq["qty"] * liq["price"] * book.contract_size[sym]
    counts = np.diff(book.tier_start)[sym]
    floor = np.where(counts > DEEP_TIER, book.tier_floor[np.minimum(book.tier_start[sym] + DEEP_TIER,
                                                                    book.tier_floor.size - 1)], np.inf)
    return int(np.sum(notional >= floor))


# ------------------------------------------------------------------ writing


def write_npz(f, arrays: dict) -> None:
    """``np.savez_compressed``'s format (``np.load`` reads it), but byte-reproducible: fixed
    member timestamps, so regenerating unchanged results leaves git with nothing to commit."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, buf.getvalue(), compresslevel=9)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def main() -> int:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    names = [c["name"] for c in CASES]
    assert len(set(names)) == len(names), "case names must be distinct"
    books = {name: build_book(recipe) for name, recipe in BOOKS.items()}
    stored = []
    for case in CASES:
        book = books[case["book"]]
        records = run_case(case, book)
        failed = check_expectations(case, book, records)
        assert not failed, f"{case['name']}: does not exercise {failed}"
        s = records.summary
        assert np.all(np.isfinite(s["conservation_error"])) and np.all(np.abs(s["conservation_error"]) <= 1e-9), \
            f"{case['name']}: money not conserved: {s['conservation_error']}"
        arrays = stress_arrays(records)
        _atomic_write(FIXTURES / f"{case['name']}.npz", lambda f: write_npz(f, arrays))
        ids, shocks = build_scenarios(book, case["scenarios"])
        entry = dict(case, book_recipe=BOOKS[case["book"]], batch=BATCH, symbols=list(records.symbols),
                     book_sha256=book_fingerprint(book), shocks_sha256=fingerprint(ids, shocks),
                     rows={t: int(len(getattr(records, t)["scenario"])) for t in
                           ("summary", "liquidations", "adl_fills", "haircuts", "prices")})
        stored.append(entry)
        print(f"{case['name']:<52} " + " ".join(f"{t}={n}" for t, n in entry["rows"].items())
              + f" quiet={records.timings['screened_quiet']} {records.timings['seconds']:.2f}s")
    doc = {
        "frozen_on": FROZEN_ON,
        "engine": "NumPy host engine (gpurisk.stress._Runner), backend='cpu'",
        "made_with": {"numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine()},
        "generator": "tests/make_stress_fixtures.py",
        "cases": stored,
    }
    text = json.dumps(doc, indent=1) + "\n"
    _atomic_write(FIXTURES / "cases.json", lambda f: f.write(text.encode()))
    for old in FIXTURES.glob("*.npz"):  # fixtures of cases no longer listed
        if old.stem not in names:
            old.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
