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
