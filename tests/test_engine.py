"""The engine end to end on the synthetic exchange: determinism, resident revaluation,
marks overrides, reconciliation of every account and position, and invariants at scale."""

import numpy as np
import polars as pl
import pytest

from gpurisk import BookError, Engine, revalue, synthetic_book
from gpurisk.backend import CpuBackend, get_backend
from gpurisk.parity import risk_arrays


@pytest.fixture(scope="module")
def book():
    return synthetic_book(5_000, seed=11)


def test_synthetic_book_is_balanced_realistic_and_seeded(book):
    pos = book.frames()["positions"]
    net = pos.group_by("symbol").agg(pl.col("size").sum(), pl.col("size").abs().sum().alias("oi"))
    assert (net["size"].abs() <= 1e-9 * net["oi"]).all()
    assert book.n_symbols == 10 and 2.2 < book.n_positions / book.n_accounts < 3.2
    assert 0.08 < book.isolated.mean() < 0.25
    risk = revalue(book, backend="cpu")
    statuses = set(risk.accounts["status"].to_list())
    assert statuses == {"healthy", "margin_call", "liquidatable", "bankrupt"}
    again = synthetic_book(5_000, seed=11)
    np.testing.assert_array_equal(again.size, book.size)
    assert not np.array_equal(synthetic_book(5_000, seed=12).wallet, book.wallet)


@pytest.mark.parametrize("venue", ["binance", "bybit", "bitmex", "hyperliquid", "dydx"])
def test_same_bits_on_any_thread_count(book, venue):
    one = risk_arrays(revalue(book, venue=venue, backend=CpuBackend(threads=1)))
    two = risk_arrays(revalue(book, venue=venue, backend=CpuBackend(threads=2)))
    for k in one:
        assert one[k].tobytes() == two[k].tobytes(), k


def test_every_account_and_position_comes_out_once(book):
    risk = revalue(book, backend="cpu")
    assert risk.accounts["account_id"].to_list() == sorted(book.account_id.tolist())
    assert risk.accounts["n_positions"].sum() == book.n_positions == risk.positions.height
    keys = risk.positions.select("account_id", "symbol", "margin_mode")
    assert keys.unique().height == keys.height


def test_ranks_are_a_permutation_per_symbol_and_side_and_lights_fall_with_rank(book):
    for venue in ("binance", "bitmex", "dydx"):
        pos = revalue(book, venue=venue, backend="cpu").positions
        q = pos.group_by("symbol", "side").agg(
            pl.col("adl_rank").sort().alias("ranks"), pl.len().alias("n"),
            pl.col("adl_lights").sort_by("adl_rank").alias("lights"))
        for row in q.iter_rows(named=True):
            assert row["ranks"] == list(range(1, row["n"] + 1))
            assert all(a >= b for a, b in zip(row["lights"], row["lights"][1:]))
            assert row["lights"][-1] == 1
            if venue != "bitmex" and row["n"] >= 5:  # by rank, the first fifth has 5 lights
                assert row["lights"][0] == 5


def test_queue_order_is_score_descending_then_account_id(book):
    pos = revalue(book, venue="bybit", backend="cpu").positions
    for (_, _), g in pos.sort("adl_rank").group_by("symbol", "side"):
        s = g.sort("adl_rank")
        score, acc = s["adl_score"].to_numpy(), s["account_id"].to_numpy()
        assert np.all(score[:-1] >= score[1:])
        tie = score[:-1] == score[1:]
        assert np.all(acc[:-1][tie] <= acc[1:][tie])


def test_resident_engine_matches_one_shot_and_reuses_buffers(book):
    engine = Engine(book, venue="binance", backend="cpu")
    marks = {"BTCUSDT": 55_000.0, "ETHUSDT": 2_600.0}
    first = engine.revalue(marks)
    one_shot = revalue(book, venue="binance", backend="cpu", marks=marks)
    assert first.positions.equals(one_shot.positions)
    assert first.accounts.equals(one_shot.accounts)
    base = engine.revalue()
    again = engine.revalue(marks, out=base)
    assert again.position_margin.upnl is base.position_margin.upnl  # same buffers
    assert again.positions.equals(one_shot.positions)
    btc = one_shot.positions.filter(pl.col("symbol") == "BTCUSDT")
    assert (btc["mark_price"] == 55_000.0).all()


def test_unranked_revaluation_is_the_same_but_for_null_queue_places(book):
    engine = Engine(book, venue="bitmex", backend="cpu")
    ranked = engine.revalue()
    scores_only = engine.revalue(rank=False)
    assert scores_only.positions.schema == ranked.positions.schema
    queue = ["adl_rank", "adl_lights"]
    assert scores_only.positions.drop(queue).equals(ranked.positions.drop(queue))
    assert scores_only.accounts.equals(ranked.accounts)
    assert scores_only.positions.select(queue).null_count().row(0) == (book.n_positions,) * 2
    assert scores_only.adl.order is None and scores_only.adl.rank is None  # no queue was ranked
    # a scores-only result's buffers can be reused by a ranked revaluation
    assert engine.revalue(out=scores_only).positions.equals(ranked.positions)


@pytest.mark.parametrize("venue", ["binance", "bybit", "okx", "gate", "bitmex", "hyperliquid", "dydx"])
def test_liquidation_prices_of_chosen_positions_are_the_full_revaluations(book, venue):
    """Revalued without liquidation prices, then liquidation_prices for a subset (the monitor's
    path): those positions get the full revaluation's bits, the others stay NaN."""
    from gpurisk.liquidation import liquidation_prices

    engine = Engine(book, venue=venue, backend="cpu")
    marks = book.mark_price * 1.07  # some positions pass their liquidation price
    full = engine.revalue(marks, rank=False)
    lean = engine.revalue(marks, rank=False, liq_price=False)
    assert np.isnan(lean.position_risk.liq_price).all()
    for k in ("equity", "ratio", "status", "bankruptcy_price"):
        assert getattr(lean.position_risk, k).tobytes() == getattr(full.position_risk, k).tobytes(), k
    chosen = np.random.default_rng(3).choice(book.n_positions, book.n_positions // 3, replace=False)
    liquidation_prices(engine.backend, engine.device, lean.position_margin, lean.account_margin, engine.venue,
                       chosen, lean.position_risk.liq_price)
    got, want = lean.position_risk.liq_price, full.position_risk.liq_price
    assert got[chosen].tobytes() == want[chosen].tobytes()
    rest = np.setdiff1d(np.arange(book.n_positions), chosen)
    assert np.isnan(got[rest]).all() and np.isfinite(want[rest]).any()


def test_padded_tiers_and_liquidation_root_bounds(book):
    from gpurisk.engine import TIER_LOOKAHEAD, liquidation_root_bounds, padded_tiers

    t = padded_tiers(book)
    counts = np.diff(book.tier_start)
    width = max(int(counts.max()), TIER_LOOKAHEAD + 1)
    assert (np.diff(t["tier_start"]) == width).all()
    for s in range(book.n_symbols):
        real = slice(book.tier_start[s], book.tier_start[s + 1])
        pad = slice(s * width + counts[s], (s + 1) * width)
        assert (t["tier_floor"][s * width:s * width + counts[s]] == book.tier_floor[real]).all()
        assert np.isposinf(t["tier_floor"][pad]).all()
    # the bounds: M_t − floor_t (long), −(floor_t + M_t) (short), M_t the MM at the floor
    floor = np.array([0.0, 5_000.0, np.inf])
    mmr = np.array([0.01, 0.02, 0.02])
    cum = np.array([0.0, 50.0, 50.0])
    bounds = liquidation_root_bounds(floor, mmr, cum).reshape(-1, 2)
    assert bounds[1].tolist() == [50.0 - 5_000.0, -(5_000.0 + 50.0)]
    assert bounds[0].tolist() == [0.0, 0.0]
    assert np.isneginf(bounds[2]).all()  # padding: never passed


def test_marks_frame_and_array_forms(book):
    engine = Engine(book, backend="cpu")
    a = engine.revalue({"SOLUSDT": 120.0})
    b = engine.revalue(pl.DataFrame({"symbol": ["SOLUSDT"], "mark_price": [120.0]}))
    arr = book.mark_price.copy()
    arr[book.symbol_index("SOLUSDT")] = 120.0
    c = engine.revalue(arr)
    assert a.accounts.equals(b.accounts) and a.accounts.equals(c.accounts)


def test_bad_marks_are_refused_by_name(book):
    engine = Engine(book, backend="cpu")
    with pytest.raises(BookError, match="marks.symbol: must be a symbol of the book .*'NOPE'"):
        engine.revalue({"NOPE": 1.0})
    with pytest.raises(BookError, match="marks.mark_price: must be finite and > 0 .*BTCUSDT=nan"):
        engine.revalue({"BTCUSDT": float("nan")})


def test_liquidation_and_bankruptcy_invariants_at_scale(book):
    """Single-position accounts of the synthetic book: at its liquidation price the margin
    ratio is exactly the threshold; at its bankruptcy price equity is zero."""
    risk = revalue(book, backend="cpu")
    pos = risk.positions.join(risk.accounts.select("account_id", "n_positions"), on="account_id")
    single = pos.filter((pl.col("n_positions") == 1) & (pl.col("margin_mode") == "cross")
                        & pl.col("liq_price").is_not_null()).head(300)
    assert single.height > 50
    wallet = dict(zip(book.account_id.tolist(), book.wallet.tolist()))
    for r in single.iter_rows(named=True):
        q, e, lp = r["size"], r["entry_price"], r["liq_price"]
        equity = wallet[r["account_id"]] + q * (lp - e)
        sym = r["symbol"]
        s = book.symbol_index(sym)
        lo, hi = book.tier_start[s], book.tier_start[s + 1]
        n = abs(q) * lp
        k = lo + np.searchsorted(book.tier_floor[lo:hi], n, side="right") - 1
        mm = n * book.tier_mmr[k] - book.tier_cum[k]
        assert equity == pytest.approx(mm, rel=1e-9, abs=1e-9 * abs(q) * e)
        bp = r["bankruptcy_price"]
        if bp is not None:
            assert wallet[r["account_id"]] + q * (bp - e) == pytest.approx(0.0, abs=1e-9 * abs(q) * e)


def test_unknown_backend_and_venue_are_explained(book):
    with pytest.raises(ValueError, match="backend must be 'auto', 'cpu' or 'gpu'"):
        get_backend("tpu")
    with pytest.raises(ValueError, match="unknown venue 'ftx'; presets are binance"):
        revalue(book, venue="ftx", backend="cpu")


def test_write_results(tmp_path, book):
    risk = revalue(book, backend="cpu")
    risk.write(tmp_path)
    acc = pl.read_parquet(tmp_path / "accounts.parquet")
    pos = pl.read_parquet(tmp_path / "positions.parquet")
    assert acc.height == book.n_accounts and pos.height == book.n_positions
    assert set(pos.columns) >= {"liq_price", "bankruptcy_price", "adl_score", "adl_rank", "adl_lights"}


def test_synthetic_book_passes_validation_unchanged(book):
    from gpurisk import Book

    again = Book.from_frames(**book.frames())
    for name in ("account_id", "wallet", "pos_start", "pos_account", "pos_symbol", "size", "entry",
                 "isolated", "isolated_margin", "leverage", "tier_floor", "tier_cum", "mark_price"):
        np.testing.assert_array_equal(getattr(again, name), getattr(book, name), err_msg=name)


def test_array_core_runs_without_polars():
    """A GPU node may have CuPy, NumPy and pyarrow only: the engine must not need Polars."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['polars'] = None\n"
            "import gpurisk\n"
            "book = gpurisk.synthetic_book(300, seed=1)\n"
            "risk = gpurisk.Engine(book, backend='cpu').revalue({'BTCUSDT': 50000.0})\n"
            "print(int((risk.backend.to_host(risk.adl.rank) >= 1).sum()) == book.n_positions)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize("venue", ["binance", "bitmex", "dydx"])
def test_chunks_of_whole_accounts_give_the_same_bits(book, venue):
    whole = risk_arrays(revalue(book, venue=venue, backend="cpu"))
    for chunk in (book.n_positions // 2 + 1, book.n_positions // 7 + 1, 5):
        engine = Engine(book, venue=venue, backend="cpu", chunk_positions=chunk)
        assert len(engine.chunks) > 1
        parts = risk_arrays(engine.revalue())
        for k in whole:
            assert whole[k].tobytes() == parts[k].tobytes(), (chunk, k)


def test_account_chunks_cover_every_account_once(book):
    chunks = book.account_chunks(1_000)
    assert chunks[0][0] == 0 and chunks[-1][1] == book.n_accounts
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    sizes = [book.pos_start[e] - book.pos_start[s] for s, e in chunks]
    assert max(sizes) <= 1_000 and sum(sizes) == book.n_positions


def test_automatic_chunks_are_sized_from_free_memory_and_the_workers_sharing_it():
    from gpurisk.engine import BYTES_PER_POSITION, CHUNK_MEMORY_SHARE, auto_chunk_positions

    fits = int(10**9 * CHUNK_MEMORY_SHARE) // BYTES_PER_POSITION
    assert auto_chunk_positions(fits, 10**9) is None  # fits: one pass
    assert auto_chunk_positions(fits + 1, 10**9) == fits
    assert auto_chunk_positions(fits, 10**9, workers_per_gpu=4) == int(10**9 * CHUNK_MEMORY_SHARE / 4) // BYTES_PER_POSITION
    assert auto_chunk_positions(10, 0) == 1  # never zero positions per chunk
    with pytest.raises(ValueError, match="workers_per_gpu"):
        auto_chunk_positions(10, 10**9, workers_per_gpu=0)


def test_workers_per_gpu_comes_from_the_environment(book, monkeypatch):
    from gpurisk.parity import StandInBackend

    device = StandInBackend(memory_bytes=book.n_positions * 320 * 2)  # room for the book twice
    assert len(Engine(book, backend=device).chunks) == 1
    monkeypatch.setenv("GPURISK_WORKERS_PER_GPU", "4")
    assert len(Engine(book, backend=device).chunks) >= 3
    assert len(Engine(book, backend=device, workers_per_gpu=1).chunks) == 1  # the argument wins
    monkeypatch.setenv("GPURISK_WORKERS_PER_GPU", "two")
    with pytest.raises(ValueError, match="GPURISK_WORKERS_PER_GPU must be a whole number"):
        Engine(book, backend=device)


# --------------------------------------------------------------------- result tables
# Risk.accounts / Risk.positions build their frames from integer codes and zero-copy arrays
# (Enum columns from their physical codes, null masks over the kernels' buffers, one
# parallel Polars select). The reference below is the straightforward builder they
# replaced: labels gathered from Enum series, NaN-substituted copies turned into nulls.
# The new frames must equal it exactly: names, order, dtypes (Enum categories included),
# values and nulls.

def _reference_tables(risk):
    from gpurisk.schema import MARGIN_MODES, SIDES, STATUSES

    def enum(categories):
        return pl.Series(list(categories), dtype=pl.Enum(list(categories)))

    def queue(values, dtype):
        if values is None:
            return pl.repeat(None, b.n_positions, dtype=dtype, eager=True)
        return pl.Series(h(values)).cast(dtype)

    b, am, pm, pr, q, h = (risk.book, risk.account_margin, risk.position_margin, risk.position_risk,
                           risk.adl, risk.backend.to_host)
    accounts = pl.DataFrame({
        "account_id": b.account_id, "asset": enum(b.assets).gather(b.account_asset), "wallet_balance": b.wallet, "upnl": h(am.upnl), "equity": h(am.equity),
        "maint_margin": h(am.maint), "close_fee": h(am.close_fee), "init_margin": h(am.init),
        "margin_ratio": h(am.ratio),
        "available_balance": h(am.available), "status": enum(STATUSES).gather(h(am.status)),
        "n_positions": np.diff(b.pos_start).astype(np.int32)})
    liq, bp = h(pr.liq_price), h(pr.bankruptcy_price)
    positions = pl.DataFrame({
        "account_id": b.account_id[b.pos_account], "symbol": enum(b.symbols).gather(b.pos_symbol),
        "asset": enum(b.assets).gather(b.settle_asset[b.pos_symbol]),
        "margin_mode": enum(MARGIN_MODES).gather(b.isolated),
        "side": enum(SIDES).gather((b.size < 0).astype(np.int8)), "size": b.size, "entry_price": b.entry,
        "mark_price": risk.mark[b.pos_symbol], "notional": h(pm.notional), "upnl": h(pm.upnl),
        "maint_margin": h(pm.maint), "close_fee": h(pm.close_fee), "init_margin": h(pm.init),
        "margin_ratio": h(pr.ratio),
        "status": enum(STATUSES).gather(h(pr.status)), "liq_price": pl.Series(liq).fill_nan(None),
        "bankruptcy_price": pl.Series(np.where(bp > 0, bp, np.nan)).fill_nan(None),
        "adl_score": h(q.score), "adl_rank": queue(q.rank, pl.Int64), "adl_lights": queue(q.lights, pl.Int8)})
    return accounts, positions


def _assert_same_tables(risk):
    ref_acc, ref_pos = _reference_tables(risk)
    for got, want in ((risk.accounts, ref_acc), (risk.positions, ref_pos)):
        assert got.columns == want.columns
        assert got.schema == want.schema  # Enum categories, in order, included
        for name in want.columns:  # column by column, for a readable failure
            assert got[name].null_count() == want[name].null_count(), name
            assert got[name].equals(want[name], check_names=True), name
        assert got.equals(want)


@pytest.fixture(scope="module")
def edge_book():
    """Isolated positions (30%), stressed and empty accounts: NaN liquidation prices and
    non-positive bankruptcy prices among the results."""
    return synthetic_book(4_000, seed=5, isolated_share=0.3, stressed_share=0.2, empty_share=0.05)


def test_result_tables_of_a_book_in_several_assets_equal_the_reference_builder():
    """Positions name their market's settle asset (gathered per symbol); a book in one asset
    repeats its one label. Both against the reference's per-row gather."""
    book = synthetic_book(2_000, seed=7, inverse_markets=2)
    assert len(book.assets) > 1 and len(set(book.settle_asset.tolist())) > 1
    _assert_same_tables(revalue(book, venue="binance", backend="cpu"))


@pytest.mark.parametrize("venue", ["binance", "bitmex", "hyperliquid"])
def test_result_tables_equal_the_reference_builder(edge_book, venue):
    risk = revalue(edge_book, venue=venue, backend="cpu", marks=edge_book.mark_price * 0.8)
    liq, bp = risk.position_risk.liq_price, risk.position_risk.bankruptcy_price
    assert edge_book.isolated.any() and np.isnan(liq).any() and (bp <= 0).any() and (bp > 0).any()
    _assert_same_tables(risk)
    assert risk.positions["liq_price"].null_count() == np.isnan(liq).sum()
    assert risk.positions["bankruptcy_price"].null_count() == (~(bp > 0)).sum()


def test_result_tables_null_edge_values_like_the_reference(edge_book):
    """NaN, ±0, ±inf and the smallest subnormals in the price buffers: Polars orders NaN above
    every number (NaN > 0 is true there), so the bankruptcy mask must drop NaN by name."""
    risk = revalue(edge_book, backend="cpu")
    edge = np.array([np.nan, -np.nan, 0.0, -0.0, np.inf, -np.inf, 5e-324, -5e-324, 1.5, -1.5])
    risk.position_risk.bankruptcy_price[:edge.size] = edge
    risk.position_risk.liq_price[:edge.size] = edge[::-1]
    _assert_same_tables(risk)
    bp = risk.positions["bankruptcy_price"].head(edge.size).to_list()
    assert bp == [None, None, None, None, np.inf, None, 5e-324, None, 1.5, None]
    liq = risk.positions["liq_price"].head(edge.size).to_list()
    assert liq[-2:] == [None, None] and liq[:8] == [-1.5, 1.5, -5e-324, 5e-324, -np.inf, np.inf, -0.0, 0.0]


def test_unranked_result_tables_equal_the_reference_builder(edge_book):
    risk = Engine(edge_book, venue="dydx", backend="cpu").revalue(rank=False)
    _assert_same_tables(risk)
    assert risk.positions["adl_rank"].null_count() == risk.positions["adl_lights"].null_count() == edge_book.n_positions
    assert risk.positions.schema["adl_rank"] == pl.Int64 and risk.positions.schema["adl_lights"] == pl.Int8


def test_chunked_result_tables_equal_the_reference_builder_and_one_pass(edge_book):
    engine = Engine(edge_book, venue="bybit", backend="cpu", chunk_positions=edge_book.n_positions // 5 + 1)
    assert len(engine.chunks) > 1
    risk = engine.revalue({"BTCUSDT": 40_000.0})
    _assert_same_tables(risk)
    whole = Engine(edge_book, venue="bybit", backend="cpu").revalue({"BTCUSDT": 40_000.0})
    assert risk.positions.equals(whole.positions) and risk.accounts.equals(whole.accounts)


def test_result_tables_on_a_backend_that_copies_to_host(edge_book):
    """The stand-in's arrays come back through to_host like a GPU's; same frames."""
    from gpurisk.parity import StandInBackend

    _assert_same_tables(revalue(edge_book, venue="binance", backend=StandInBackend()))


def test_result_tables_with_more_symbols_than_one_byte_of_codes():
    """300 symbols: Polars stores the symbol Enum's codes as UInt16, not UInt8."""
    from gpurisk import Book

    rng = np.random.default_rng(3)
    symbols = [f"S{i:03d}USDT" for i in range(300)]
    n_acc, n_pos = 200, 900
    markets = pl.DataFrame({"symbol": symbols, "mark_price": rng.uniform(1, 100, 300)})
    tiers = pl.DataFrame({"symbol": symbols * 2, "notional_floor": [0.0] * 300 + [50_000.0] * 300,
                          "maint_margin_rate": [0.01] * 300 + [0.02] * 300,
                          "max_leverage": [50.0] * 300 + [20.0] * 300})
    accounts = pl.DataFrame({"account_id": np.arange(n_acc) * 3, "wallet_balance": rng.uniform(10, 5_000, n_acc)})
    pairs = np.unique(rng.integers(0, n_acc * 300, n_pos))
    acc, sym = pairs // 300, pairs % 300
    positions = pl.DataFrame({"account_id": acc * 3, "symbol": [symbols[s] for s in sym],
                              "size": rng.choice([-1.0, 1.0], sym.size) * rng.uniform(0.5, 50, sym.size),
                              "entry_price": markets["mark_price"].to_numpy()[sym] * rng.uniform(0.7, 1.3, sym.size),
                              "margin_mode": rng.choice(["cross", "isolated"], sym.size, p=[0.8, 0.2]).tolist()})
    positions = positions.with_columns(isolated_margin=pl.when(pl.col("margin_mode") == "isolated")
                                       .then(pl.col("size").abs() * pl.col("entry_price") / 10).otherwise(0.0))
    book = Book.from_frames(markets=markets, tiers=tiers, accounts=accounts, positions=positions)
    risk = revalue(book, backend="cpu")
    assert risk.positions["symbol"].to_physical().dtype == pl.UInt16
    _assert_same_tables(risk)


def test_enum_codes_helpers_match_gathered_labels():
    from gpurisk.risk import _codes, _enum, _to_enum

    rng = np.random.default_rng(0)
    for k, physical in ((2, np.uint8), (256, np.uint16), (70_000, np.uint32)):
        categories = [f"c{i}" for i in range(k)]
        dtype, codes_type = _enum(categories)
        assert codes_type == physical and dtype == pl.Enum(categories)
        for source in (np.int8, np.int32, np.int64):
            if np.iinfo(source).max < k - 1:
                continue
            codes = rng.integers(0, k, 1_000).astype(source)
            got = pl.DataFrame({"x": _codes(codes, codes_type)}).select(_to_enum("x", dtype))["x"]
            want = pl.Series("x", categories, dtype=dtype).gather(codes)
            assert got.dtype == want.dtype and got.equals(want)
    flags = np.array([True, False, True])
    assert _codes(flags, np.dtype(np.uint8)).tolist() == [1, 0, 1]
    with pytest.raises(pl.exceptions.ComputeError):  # an invalid code is refused, never a wrong label
        pl.DataFrame({"x": np.array([0, 5], np.uint8)}).select(_to_enum("x", pl.Enum(["a", "b"])))


def test_result_tables_wrap_the_result_arrays_without_copies(edge_book):
    """Float and integer results are the kernels' own buffers (cpu backend), as before."""
    risk = revalue(edge_book, backend="cpu")
    pos, acc = risk.positions, risk.accounts
    for series, array in ((pos["upnl"], risk.position_margin.upnl), (pos["adl_score"], risk.adl.score),
                          (pos["adl_rank"], risk.adl.rank), (pos["size"], edge_book.size),
                          (acc["equity"], risk.account_margin.equity)):
        assert series.to_numpy().ctypes.data == array.ctypes.data
