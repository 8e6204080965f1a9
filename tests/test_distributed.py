"""Scale-out on Dask: sharded books, exact global ADL ranks, the same answers as one machine,
and workers that die mid-run (DESIGN §8 "Scale-out")."""

import json
import os
import signal
import threading
import time

import numpy as np
import polars as pl
import pytest

distributed = pytest.importorskip("distributed")

import gpurisk  # noqa: E402
from gpurisk.book import BookError  # noqa: E402
from gpurisk.cli import main  # noqa: E402
from gpurisk.distributed import (  # noqa: E402
    DistributedEngine,
    DistributedRunError,
    read_shard,
    read_sharded_book,
    revalue_distributed,
    shard_paths,
    split_book,
    stress_distributed,
    write_sharded,
)
from gpurisk.stress import Impact, shock_grid, stress  # noqa: E402

VENUES = ["binance", "bybit", "bitmex", "hyperliquid", "dydx", "okx", "gate"]
SHARDS = [1, 2, 3, 8]
TABLES = ("summary", "liquidations", "adl_fills", "haircuts", "prices")


def _cluster(**scheduler_kwargs):
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                    env={"OMP_NUM_THREADS": "1"}, scheduler_kwargs=scheduler_kwargs or None)


@pytest.fixture(scope="module")
def book():
    return gpurisk.synthetic_book(2_500, seed=11)


@pytest.fixture(scope="module")
def reference(book):
    """Single-machine results per venue (also warms the kernel cache the workers share)."""
    return {v: gpurisk.revalue(book, venue=v, backend="cpu") for v in VENUES}


@pytest.fixture(scope="module")
def sharded(book, tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    return {n: write_sharded(book, root / f"book-{n}", n) for n in SHARDS}


@pytest.fixture(scope="module")
def client(reference):
    with _cluster() as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture
def client_to_kill(reference):
    """A cluster of its own for a test that kills a worker. Dask's LocalCluster closes a nanny
    for good when its worker name is missing 15 s (lost-worker-timeout) after an earlier loss of
    that name, so two kills of one worker some 15 s apart on a shared cluster would leave it a
    worker short."""
    with _cluster() as cluster, distributed.Client(cluster) as c:
        yield c


def assert_same(got, want):
    assert got.columns == want.columns and got.dtypes == want.dtypes
    for c in want.columns:
        assert got[c].equals(want[c]), f"column {c} differs"
    assert got.equals(want)


# ------------------------------------------------------------------ sharded books


def test_sharded_book_holds_whole_accounts_in_contiguous_ranges(book, sharded):
    root = sharded[3]
    manifest = json.loads((root / "manifest.json").read_text())
    assert [s["name"] for s in manifest["shards"]] == ["shard-00000", "shard-00001", "shard-00002"]
    assert sum(s["positions"] for s in manifest["shards"]) == book.n_positions
    last = -1
    for path in shard_paths(root):
        acc = pl.read_parquet(path / "accounts.parquet")
        pos = pl.read_parquet(path / "positions.parquet")
        assert acc["account_id"].min() > last  # increasing, disjoint ranges in shard order
        last = acc["account_id"].max()
        assert pos["account_id"].is_in(acc["account_id"].implode()).all()  # an account never spans shards
    back = read_sharded_book(root)
    for name in ("account_id", "wallet", "pos_start", "pos_symbol", "size", "entry", "isolated", "leverage"):
        assert np.array_equal(getattr(back, name), getattr(book, name)), name
    assert read_shard(root, 1).n_accounts == manifest["shards"][1]["accounts"]
    with pytest.raises(ValueError, match="n_shards"):
        write_sharded(book, root / "too-many", book.n_accounts + 1)


def _legacy_manifest(root):
    """Rewrite a sharded book's manifest in the old format (shards and row counts, no checksums)."""
    m = json.loads((root / "manifest.json").read_text())
    legacy = {"format": "gpurisk-sharded-book", "version": 1, "n_shards": m["n_shards"],
              "accounts": m["accounts"], "positions": m["positions"], "shards": m["shards"]}
    (root / "manifest.json").write_text(json.dumps(legacy))


def test_a_broken_layout_names_the_shard(book, tmp_path):
    root = write_sharded(book, tmp_path / "b", 2)
    s0, s1 = shard_paths(root)
    # Move one position of the first shard into the second: its account is not there.
    pos0 = pl.read_parquet(s0 / "positions.parquet")
    pos1 = pl.read_parquet(s1 / "positions.parquet")
    pos0.slice(1).write_parquet(s0 / "positions.parquet")
    pl.concat([pos0.head(1), pos1]).write_parquet(s1 / "positions.parquet")
    _legacy_manifest(root)  # edited by hand: keep the pre-checksum manifest so the layout check is reached
    with pytest.raises(BookError, match="shard-00001/positions.account_id"):
        read_sharded_book(root)
    with pytest.raises(BookError, match="shard-00001/positions.account_id: must be an account of accounts"):
        read_shard(root, 1)


# ------------------------------------------------------------------ revalue


@pytest.mark.parametrize("n_shards", SHARDS)
def test_revalue_is_bit_for_bit_the_single_machine_run(client, sharded, reference, n_shards):
    for venue in VENUES:
        risk = revalue_distributed(sharded[n_shards], client, venue=venue, backend="cpu")
        assert risk.timings["shards"] == n_shards
        assert_same(risk.accounts, reference[venue].accounts)
        assert_same(risk.positions, reference[venue].positions)


def test_global_ranks_differ_from_shard_local_ones(book, reference):
    # The test above is not vacuous: ranking each shard on its own gives other ranks.
    local = pl.concat([gpurisk.revalue(s, venue="binance", backend="cpu").positions for s in split_book(book, 3)])
    assert not local["adl_rank"].equals(reference["binance"].positions["adl_rank"])


def test_in_memory_book_plain_directory_and_marks(client, book, tmp_path):
    marks = {"BTCUSDT": 55_000.0, "ETHUSDT": 2_700.0}
    want = gpurisk.revalue(book, venue="bitmex", backend="cpu", marks=marks)
    got = revalue_distributed(book, client, venue="bitmex", backend="cpu", marks=marks, n_shards=5)
    assert_same(got.positions, want.positions)
    assert_same(got.accounts, want.accounts)
    book.write(tmp_path / "plain")
    got = revalue_distributed(tmp_path / "plain", client, venue="bitmex", backend="cpu", marks=marks)
    assert_same(got.positions, want.positions)
    got.write_shards(tmp_path / "out")
    back = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "out" / "shards").glob("*/positions.parquet"))])
    assert_same(back, want.positions)
    with pytest.raises(BookError, match="marks.symbol"):
        revalue_distributed(book, client, backend="cpu", marks={"NOPE": 1.0})


def test_tasks_on_threads_of_one_worker_do_not_share_sort_buffers():
    # Shards revalued at once on the threads of one process. The process-wide cpu backend keeps
    # its radix sort buffers between calls; tasks sharing it corrupt memory (a crash at this
    # size), so each task gets its own backend.
    big = gpurisk.synthetic_book(200_000, seed=2)
    want = gpurisk.revalue(big, venue="binance", backend="cpu").positions
    with distributed.LocalCluster(n_workers=1, threads_per_worker=4, processes=False, dashboard_address=":0") as cl, \
            distributed.Client(cl) as c:
        for _ in range(3):
            assert_same(revalue_distributed(big, c, venue="binance", backend="cpu", n_shards=4).positions, want)


def test_resident_engine_revalues_new_marks_without_reading_the_book_again(client, book, sharded, reference,
                                                                           tmp_path):
    import shutil

    root = tmp_path / "resident"
    shutil.copytree(sharded[3], root)
    marks = [None, {"BTCUSDT": 52_000.0}, {"BTCUSDT": 71_000.0, "ETHUSDT": 2_100.0, "SOLUSDT": 90.0}]
    engine = DistributedEngine(root, client, venue="bitmex", backend="cpu")
    assert (engine.shards, engine.n_accounts, engine.n_positions) == (3, book.n_accounts, book.n_positions)
    shutil.rmtree(root)  # resident: nothing is read again
    results = [engine.revalue(m) for m in marks]
    engine.close()
    for m, got in zip(marks, results):  # tables fetched after close: results outlive the engine
        want = reference["bitmex"] if m is None else gpurisk.revalue(book, venue="bitmex", backend="cpu", marks=m)
        assert_same(got.positions, want.positions)
        assert_same(got.accounts, want.accounts)
        assert got.timings["resident"]
    with pytest.raises(DistributedRunError, match="closed"):
        engine.revalue()
    with DistributedEngine(book, client, venue="dydx", backend="cpu", n_shards=4) as engine:  # an in-memory Book
        assert_same(engine.revalue().positions, reference["dydx"].positions)
        with pytest.raises(BookError, match="marks.symbol"):
            engine.revalue({"NOPE": 1.0})
        assert_same(engine.revalue().accounts, reference["dydx"].accounts)  # still usable


def test_resident_engine_reloads_the_shards_of_a_killed_worker(client_to_kill, book, sharded):
    client = client_to_kill
    marks = {"BTCUSDT": 48_000.0}
    want = gpurisk.revalue(book, venue="binance", backend="cpu", marks=marks)
    with DistributedEngine(sharded[3], client, venue="binance", backend="cpu", timeout=60) as engine:
        assert_same(engine.revalue(marks).positions, want.positions)
        pids = {m["worker"] for m in engine._metas}
        os.kill(engine._metas[1]["worker"], signal.SIGKILL)
        got = engine.revalue(marks)
        assert_same(got.positions, want.positions)
        assert_same(got.accounts, want.accounts)
    assert pids  # shards were placed on live workers
    client.wait_for_workers(2, timeout=30)


def test_resident_engine_revalues_when_no_worker_holds_a_shard(client, book, sharded, monkeypatch):
    # Right after a worker dies the scheduler may know no holder of its shard: the task then
    # goes anywhere (a preference for "no worker" is an error in Dask).
    marks = {"BTCUSDT": 47_000.0}
    want = gpurisk.revalue(book, venue="binance", backend="cpu", marks=marks)
    with DistributedEngine(sharded[3], client, venue="binance", backend="cpu", timeout=60) as engine:
        monkeypatch.setattr(client, "who_has", lambda futures=None, **kw: {})
        assert_same(engine.revalue(marks).positions, want.positions)


def _what_if_orders(book, n: int, seed: int) -> pl.DataFrame:
    """Orders over the whole book (every shard): adds, reduces, closes, flips on held
    positions, new positions, cross and isolated."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, book.n_positions, n)
    held = rng.random(n) < 0.7
    acc = np.where(held, book.pos_account[pick], rng.integers(0, book.n_accounts, n))
    sym = np.where(held, book.pos_symbol[pick], rng.integers(0, book.n_symbols, n))
    iso = np.where(held, book.isolated[pick], rng.random(n) < 0.2)
    size = np.where(held, book.size[pick] * rng.choice([0.5, -0.3, -1.0, -1.7], n), rng.normal(size=n) + 3.0)
    return pl.DataFrame({"account_id": book.account_id[acc], "symbol": [book.symbols[s] for s in sym],
                         "size": size, "price": book.mark_price[sym] * (1 + rng.normal(size=n) * 0.01),
                         "margin_mode": np.array(["cross", "isolated"])[iso.astype(int)]})


@pytest.mark.parametrize("venue", ["binance", "okx", "bybit"])
def test_resident_engine_what_if_equals_the_single_engine(client, book, sharded, venue):
    orders = _what_if_orders(book, 3_000, seed=4)
    marks = {"BTCUSDT": 58_500.0}
    single = gpurisk.Engine(book, venue=venue, backend="cpu")
    want = single.what_if(orders, marks)
    with DistributedEngine(sharded[3], client, venue=venue, backend="cpu") as engine:
        got = engine.what_if(orders, marks)
        assert got.equals(want)  # every column, bit for bit, in input order
        # Bad rows in several shards, unknown accounts below, between and above the shards'
        # ranges: one error, the same problems as the single engine names.
        ids = orders["account_id"].to_list()
        ids[3], ids[2_900], ids[10] = -7, int(book.account_id.max()) + 10, None
        bad = orders.with_columns(pl.Series("account_id", ids, dtype=pl.Int64),
                                  pl.Series("price", [float("nan") if i in (5, 1_500, 2_999) else p
                                                      for i, p in enumerate(orders["price"].to_list())]))
        with pytest.raises(BookError) as theirs:
            single.what_if(bad)
        with pytest.raises(BookError) as mine:
            engine.what_if(bad)
        assert sorted(map(str, mine.value.problems)) == sorted(map(str, theirs.value.problems))
        assert "row 3 (account_id=-7" in str(mine.value) and "row 1500" in str(mine.value)
        with pytest.raises(BookError, match="orders.price: required column is missing"):
            engine.what_if(orders.drop("price"))
    with pytest.raises(DistributedRunError, match="closed"):
        engine.what_if(orders)


def test_resident_engine_what_if_on_inverse_markets_equals_the_single_engine(client, tmp_path):
    """Coin-margined markets and wallets per asset: shards hold whole accounts (every pool of
    an account), so each order reaches its pool; the same rows as the single engine."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from test_whatif_inverse import pool_orders

    book = gpurisk.synthetic_book(600, seed=7, n_symbols=4, inverse_markets=2)
    orders = pool_orders(book, 500, seed=2)
    want = gpurisk.Engine(book, venue="bybit", backend="cpu").what_if(orders)
    with DistributedEngine(write_sharded(book, tmp_path / "inv", 3), client, venue="bybit", backend="cpu") as engine:
        got = engine.what_if(orders)
    assert got.equals(want) and set(got["asset"].cast(pl.String)) == set(book.assets)


# ------------------------------------------------------------------ stress


def test_stress_equals_the_single_machine_run(client, book, sharded):
    grid = shock_grid(-0.35, 0.35, 9)
    opts = dict(venue="bybit", backend="cpu", policy=["queue", "pro_rata"], insurance_fund=5_000.0)
    want = stress(book, grid, **opts)
    for src, n_tasks in ((book, 2), (book, 3), (str(sharded[2]), None)):
        got = stress_distributed(src, grid, client, n_tasks=n_tasks, **opts)
        for name in TABLES:
            assert_same(getattr(got, name), getattr(want, name))


def test_stress_cascades_and_uneven_price_paths(client, book):
    # Scenario 0 is a 3-step path, the others one step: blocks must keep the longest path.
    path = pl.DataFrame({"scenario": [0, 0, 0, 1, 2, 3], "step": [0, 1, 2, 0, 0, 0],
                         "symbol": ["*", "*", "BTCUSDT", "*", "ETHUSDT", "*"],
                         "shock": [-0.1, -0.2, -0.3, 0.2, -0.25, -0.3]})
    opts = dict(venue="dydx", backend="cpu", steps=4, impact=Impact("sqrt", coefficient=0.2))
    want = stress(book, path, **opts)
    got = stress_distributed(book, path, client, n_tasks=4, **opts)
    for name in TABLES:
        assert_same(getattr(got, name), getattr(want, name))


# ------------------------------------------------------------------ command line


def test_cli_synth_shards_and_revalue_stress_on_a_scheduler(client, tmp_path, capsys):
    book_dir = tmp_path / "book"
    assert main(["synth", str(book_dir), "--accounts", "400", "--shards", "3"]) == 0
    assert len(shard_paths(book_dir)) == 3
    addr = client.scheduler.address
    assert main(["revalue", str(book_dir), "--backend", "cpu", "--venue", "bitmex", "--scheduler", addr,
                 "--out", str(tmp_path / "dist")]) == 0
    assert main(["revalue", str(book_dir), "--backend", "cpu", "--venue", "bitmex",
                 "--out", str(tmp_path / "one")]) == 0
    for t in ("accounts", "positions"):
        assert_same(pl.read_parquet(tmp_path / "dist" / f"{t}.parquet"),
                    pl.read_parquet(tmp_path / "one" / f"{t}.parquet"))
    assert main(["stress", str(book_dir), "--backend", "cpu", "--grid", "-0.3", "0.3", "5", "--scheduler", addr,
                 "--out", str(tmp_path / "sd")]) == 0
    assert main(["stress", str(book_dir), "--backend", "cpu", "--grid", "-0.3", "0.3", "5", "--quiet",
                 "--out", str(tmp_path / "s1")]) == 0
    for t in ("summary", "liquidations", "adl_fills"):
        assert_same(pl.read_parquet(tmp_path / "sd" / f"{t}.parquet"), pl.read_parquet(tmp_path / "s1" / f"{t}.parquet"))
    assert "money conserved" in capsys.readouterr().out


def test_cli_unreachable_scheduler_exits_2(tmp_path, capsys):
    import dask

    main(["synth", str(tmp_path), "--accounts", "50", "--shards", "2"])
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(["revalue", str(tmp_path), "--backend", "cpu", "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err


# ------------------------------------------------------------------ workers that die


def _pid_when_written(marker, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(marker):
            text = open(marker).read().strip()
            if text:
                return int(text)
        time.sleep(0.02)
    raise AssertionError("the task never started")


@pytest.mark.parametrize("what", ["revalue", "stress"])
def test_a_worker_killed_mid_run_is_retried_and_the_result_is_complete(client_to_kill, book, sharded, reference,
                                                                       tmp_path, what):
    client = client_to_kill
    marker = str(tmp_path / "first-attempt")

    def hook(label, marker=marker):  # sent by value to the workers
        import os
        import time

        if not label.endswith("-1"):
            return
        try:
            os.close(os.open(marker + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # a retry: run normally
        with open(marker + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(marker + ".tmp", marker)
        time.sleep(60)  # first attempt: wait to be killed

    killed = []

    def killer():
        pid = _pid_when_written(marker)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    th = threading.Thread(target=killer)
    th.start()
    t0 = time.monotonic()
    try:
        if what == "revalue":
            risk = revalue_distributed(sharded[3], client, venue="bitmex", backend="cpu", timeout=60, _fault_hook=hook)
            assert_same(risk.positions, reference["bitmex"].positions)
            assert_same(risk.accounts, reference["bitmex"].accounts)
        else:
            grid = shock_grid(-0.3, 0.3, 6)
            got = stress_distributed(book, grid, client, backend="cpu", n_tasks=3, timeout=60, _fault_hook=hook)
            want = stress(book, grid, backend="cpu")
            for name in TABLES:
                assert_same(getattr(got, name), getattr(want, name))
    finally:
        th.join(timeout=40)
    assert killed and time.monotonic() - t0 < 40
    client.wait_for_workers(2, timeout=30)


def test_a_worker_that_keeps_dying_gives_a_clear_error(book):
    def hook(label):
        import os
        import signal

        if label.endswith("-1"):
            os.kill(os.getpid(), signal.SIGKILL)

    with _cluster(allowed_failures=0) as cluster, distributed.Client(cluster) as c:
        with pytest.raises(DistributedRunError, match="allowed-failures"):
            revalue_distributed(book, c, backend="cpu", n_shards=2, _fault_hook=hook)


def test_inverse_book_with_wallets_per_asset_matches_one_machine(client):
    """Coin-margined markets and one wallet per (account, asset): shards keep an account's
    wallets together, and the tables are those of one machine, bit for bit."""
    book = gpurisk.synthetic_book(1_500, seed=8, inverse_markets=2)
    want = gpurisk.revalue(book, venue="bitmex", backend="cpu")
    got = revalue_distributed(book, client, venue="bitmex", backend="cpu", n_shards=5)
    assert_same(got.accounts, want.accounts)
    assert_same(got.positions, want.positions)


def test_pooled_collateral_book_matches_one_machine(client, tmp_path):
    """A pooled venue (README "Multi-asset collateral"): shards hold whole accounts, so every pool
    is in one shard, and each carries the whole collateral table. A Book split in memory, a
    sharded directory and a resident engine all give the tables of one machine, bit for bit."""
    from test_collateral import pooled_synthetic_book

    book = pooled_synthetic_book(1_800)
    marks = book.mark_price * 0.93
    want = gpurisk.revalue(book, venue="bybit_uta", backend="cpu", marks=marks)
    assert "pool_equity" in want.accounts.columns
    got = revalue_distributed(book, client, venue="bybit_uta", backend="cpu", marks=marks, n_shards=5)
    assert_same(got.accounts, want.accounts)
    assert_same(got.positions, want.positions)
    root = write_sharded(book, tmp_path / "pooled", 4)
    assert (root / "collateral.parquet").is_file()
    assert read_sharded_book(root).collateral.equals(book.collateral)
    assert read_shard(root, 2).collateral.equals(book.collateral)
    got = revalue_distributed(str(root), client, venue="bybit_uta", backend="cpu", marks=marks)
    assert_same(got.accounts, want.accounts)
    from test_whatif import _random_orders

    orders = _random_orders(book, 400, seed=6)  # what-if against the pool: the single engine's rows
    want_what_if = gpurisk.Engine(book, venue="bybit_uta", backend="cpu").what_if(orders, marks)
    with DistributedEngine(str(root), client, venue="bybit_uta", backend="cpu") as engine:
        assert_same(engine.revalue(marks).accounts, want.accounts)
        got_what_if = engine.what_if(orders, marks)
    assert "pool_equity" in got_what_if.columns and got_what_if.equals(want_what_if)


def test_pooled_venue_without_a_collateral_table_names_it(client, book):
    with pytest.raises(BookError, match="collateral"):
        revalue_distributed(book, client, venue="bybit_uta", backend="cpu", n_shards=2)
