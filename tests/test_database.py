"""Books read from PostgreSQL and results written back, against a real server (see
tests/postgres_server.py: GPURISK_TEST_POSTGRES, or a throwaway cluster; no server fails)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from urllib.parse import quote, urlsplit

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpurisk
from gpurisk import database as db
from gpurisk.book import Book, BookError
from gpurisk.cli import main

from books import tiny_frames
from postgres_server import ENV, NoServer, ThrowawayServer, with_options

BOOK_ARRAYS = ("mark_price", "contract_size", "tick_size", "tier_start", "tier_floor", "tier_mmr", "tier_cum",
               "tier_max_leverage", "account_id", "wallet", "pos_start", "pos_account", "pos_symbol", "size",
               "entry", "isolated", "isolated_margin", "leverage")

# The layout a venue's database would have (README, "From a database").
DDL = {
    "markets": "symbol text PRIMARY KEY, mark_price double precision NOT NULL, contract_size double precision, "
               "tick_size double precision",
    "tiers": "symbol text, notional_floor double precision, maint_margin_rate double precision, "
             "maint_amount double precision, max_leverage double precision",
    "accounts": "account_id bigint PRIMARY KEY, wallet_balance double precision",
    "positions": "account_id bigint, symbol text, size double precision, entry_price double precision, "
                 "margin_mode text, isolated_margin double precision, leverage double precision",
}


@pytest.fixture(scope="session")
def server():
    uri = os.environ.get(ENV)
    if uri:
        yield uri
        return
    try:
        srv = ThrowawayServer()
    except NoServer as exc:
        pytest.fail(str(exc), pytrace=False)
    yield srv.uri
    srv.stop()


@pytest.fixture
def pg(server):
    """A URI whose search_path is a fresh schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    _sql(server, f"CREATE SCHEMA {schema}")
    yield with_options(server, options=f"-csearch_path={schema}")
    _sql(server, f"DROP SCHEMA {schema} CASCADE")


def _sql(uri: str, *statements: str):
    conn = db.connect(uri)
    try:
        cur = conn.cursor()
        rows = None
        for s in statements:
            cur.execute(s)
            rows = cur.fetchall() if cur.description else None
        return rows
    finally:
        conn.close()


def _load(uri: str, frames: dict, ddl: dict | None = DDL) -> None:
    """Create the tables (with the DDL given, else from the frames) and COPY the frames in."""
    conn = db.connect(uri)
    try:
        cur = conn.cursor()
        for name, df in frames.items():
            cur.execute(f"DROP TABLE IF EXISTS {name}")
            if ddl:
                cur.execute(f"CREATE TABLE {name} ({ddl[name]})")
            cur.adbc_ingest(name, df.to_arrow(), mode="append" if ddl else "create")
    finally:
        conn.close()


def _read_back(uri: str, table: str) -> pl.DataFrame:
    conn = db.connect(uri)
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT * FROM {table}")
        return pl.from_arrow(cur.fetch_arrow_table())
    finally:
        conn.close()


def _labels_as_text(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col(c).cast(pl.String) for c, t in df.schema.items() if isinstance(t, pl.Enum))


def _synthetic_frames(accounts: int = 3000, seed: int = 3) -> dict:
    frames = gpurisk.synthetic_book(accounts, seed=seed).frames()
    m = frames["markets"]
    ticks = pl.Series("tick_size", [0.1 if i % 3 == 0 else None for i in range(m.height)], dtype=pl.Float64)
    frames["markets"] = m.with_columns(ticks)
    return frames


def _same_bits(a: Book, b: Book) -> None:
    assert a.symbols == b.symbols
    for name in BOOK_ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name


# ------------------------------------------------------------------ reading


def test_book_from_postgres_has_the_same_bits_as_from_parquet(pg, tmp_path):
    frames = _synthetic_frames()
    for name, df in frames.items():
        df.write_parquet(tmp_path / f"{name}.parquet")
    _load(pg, frames)
    from_files, from_db = gpurisk.read_book(tmp_path), gpurisk.read_book(pg)
    _same_bits(from_files, from_db)
    assert from_db.n_positions == frames["positions"].height and np.any(from_db.tick_size > 0)
    a, b = gpurisk.revalue(from_files, backend="cpu"), gpurisk.revalue(from_db, backend="cpu")
    assert a.accounts.equals(b.accounts) and a.positions.equals(b.positions)


def test_table_names_and_queries_are_configurable(pg, server, tmp_path):
    frames = _synthetic_frames(500)
    _sql(server, "CREATE SCHEMA IF NOT EXISTS venue_cfg")
    try:
        conn = db.connect(server)
        cur = conn.cursor()
        for name, df in frames.items():
            cur.execute(f"DROP TABLE IF EXISTS venue_cfg.snap_{name}")
            cur.adbc_ingest(f"snap_{name}", df.to_arrow(), mode="create", db_schema_name="venue_cfg")
        conn.close()
        whole = gpurisk.read_book(server, tables={n: f"venue_cfg.snap_{n}" for n in frames})
        _same_bits(whole, Book.from_frames(**frames))
        # A query per table: only BTC positions, the others by name.
        btc = gpurisk.read_book(server, tables={n: f"venue_cfg.snap_{n}" for n in ("markets", "tiers", "accounts")},
                                queries={"positions": "SELECT * FROM venue_cfg.snap_positions WHERE symbol = 'BTCUSDT';\n"})
        expected = frames["positions"].filter(pl.col("symbol") == "BTCUSDT")
        assert btc.n_positions == expected.height > 0
        assert set(btc.pos_symbol.tolist()) == {btc.symbol_index("BTCUSDT")}
    finally:
        _sql(server, "DROP SCHEMA venue_cfg CASCADE")


def test_numeric_integer_varchar_and_enum_columns(pg):
    frames = tiny_frames()
    ddl = dict(DDL, accounts="account_id integer, wallet_balance numeric(38, 18)",
               markets="symbol varchar(20), mark_price numeric, contract_size real, tick_size double precision")
    _load(pg, {"tiers": frames["tiers"]}, ddl=None)
    _load(pg, {"positions": frames["positions"].with_columns(pl.col("entry_price").cast(pl.Int32))}, ddl=None)
    _sql(pg, f"CREATE TABLE accounts ({ddl['accounts']})", f"CREATE TABLE markets ({ddl['markets']})",
         "INSERT INTO accounts VALUES (1, 10000.000000000000000000), (2, 2000.5), (3, 500)",
         "INSERT INTO markets VALUES ('BTCUSDT', 60000.0, 1, NULL), ('ETHUSDT', 3000, 1, NULL)",
         "CREATE TYPE margin_mode AS ENUM ('cross', 'isolated')",
         "ALTER TABLE positions ALTER COLUMN margin_mode TYPE margin_mode USING margin_mode::margin_mode")
    book = gpurisk.read_book(pg)
    assert book.wallet.tolist() == [10000.0, 2000.5, 500.0]
    assert book.mark_price.tolist() == [60000.0, 3000.0]
    assert book.account_id.dtype == np.int64
    assert book.isolated.tolist() == [0, 0, 0, 1] and book.entry.tolist() == [58_000.0, 3_100.0, 61_000.0, 2_900.0]
    wallets = pl.Series("wallet_balance", [10000.0, 2000.5, 500.0])
    _same_bits(book, Book.from_frames(**{**frames, "accounts": frames["accounts"].with_columns(wallets)}))


def test_a_concurrent_writer_changes_nothing_in_the_book_read(pg, monkeypatch):
    frames = _synthetic_frames(800)
    _load(pg, frames)
    before = Book.from_frames(**frames)
    read_one = db._read_table
    seen = []

    def read_then_write(cur, name, sql, uri):
        df = read_one(cur, name, sql, uri)
        seen.append(name)
        if name == "markets":  # the snapshot is taken; the venue writes and commits meanwhile
            _sql(pg, "UPDATE markets SET mark_price = mark_price * 2",
                 "UPDATE positions SET size = size * 3",
                 "DELETE FROM positions WHERE account_id IN (SELECT account_id FROM accounts ORDER BY account_id LIMIT 10)",
                 "DELETE FROM accounts WHERE account_id IN (SELECT account_id FROM accounts ORDER BY account_id LIMIT 10)",
                 "INSERT INTO accounts VALUES (999999999, 5.0)")
        return df

    monkeypatch.setattr(db, "_read_table", read_then_write)
    during = gpurisk.read_book(pg)
    assert seen == ["markets", "tiers", "accounts", "positions"]
    _same_bits(before, during)
    monkeypatch.setattr(db, "_read_table", read_one)
    after = gpurisk.read_book(pg)  # the writer did commit: a new read sees it
    assert after.n_accounts == before.n_accounts - 10 + 1
    assert np.array_equal(after.mark_price, before.mark_price * 2)


def _bad_frames() -> dict:
    f = tiny_frames()
    f["accounts"] = pl.DataFrame({"account_id": [1, 2, 3], "wallet_balance": [10_000.0, None, 500.0]})
    p = f["positions"]
    f["positions"] = p.with_columns(pl.Series("size", [0.5, None, -0.1, 2.0]),
                                    pl.Series("entry_price", ["58000", "3100", "x", "2900"]))
    f["markets"] = f["markets"].with_columns(pl.Series("contract_size", [1.0, -2.0]))
    return f


def test_bad_input_gets_the_same_errors_as_from_files(pg, tmp_path):
    frames = _bad_frames()
    for name, df in frames.items():
        df.write_parquet(tmp_path / f"{name}.parquet")
    _load(pg, frames, ddl=None)  # the columns' types as given: entry_price is text
    with pytest.raises(BookError) as from_files:
        gpurisk.read_book(tmp_path)
    with pytest.raises(BookError) as from_db:
        gpurisk.read_book(pg)
    assert from_db.value.problems == from_files.value.problems
    text = str(from_db.value)
    assert "positions.entry_price: must be a number, got column type String" in text
    assert "accounts.wallet_balance: must be finite" in text and "account_id=2" in text
    assert "markets.contract_size: must be finite and > 0" in text and "symbol='ETHUSDT'" in text


def test_missing_tables_are_named(pg):
    frames = tiny_frames()
    _load(pg, {k: v for k, v in frames.items() if k != "tiers"}, ddl=None)
    with pytest.raises(BookError) as err:
        gpurisk.read_book(pg, tables={"accounts": "no_such_accounts"})
    tables = sorted(p.table for p in err.value.problems)
    assert tables == ["accounts", "tiers"]
    assert all("table is missing" in p.rule for p in err.value.problems)
    assert "no_such_accounts" in str(err.value)


def test_a_failing_query_names_its_table(pg):
    _load(pg, tiny_frames(), ddl=None)
    with pytest.raises(BookError, match=r"positions: cannot read it from .*no_column"):
        gpurisk.read_book(pg, queries={"positions": "SELECT no_column FROM positions"})


def test_credentials_come_from_the_environment(pg, server, monkeypatch):
    _load(pg, tiny_frames(), ddl=None)
    host, port, user, dbname, search_path = _sql(pg, "SELECT coalesce(host(inet_server_addr()), "
                                                     "split_part(current_setting('unix_socket_directories'), ',', 1)), "
                                                     "current_setting('port'), current_user, current_database(), "
                                                     "current_setting('search_path')")[0]
    for k, v in {"PGHOST": host, "PGPORT": port, "PGUSER": user, "PGDATABASE": dbname,
                 "PGOPTIONS": f"-csearch_path={search_path}"}.items():
        monkeypatch.setenv(k, v)
    assert gpurisk.read_book("postgresql://").n_positions == 4


def test_passwords_never_reach_a_message(pg, capsys):
    secret = "hunter2-secret"
    assert db.redact(f"postgresql://alice:{secret}@db.example:5432/risk?password={secret}&sslmode=require") \
        == "postgresql://alice:***@db.example:5432/risk?password=***&sslmode=require"
    parts = urlsplit(with_options(pg, password=secret))
    bad = f"postgresql://{parts.netloc}/no_such_database?{parts.query}"
    with pytest.raises(db.DatabaseError) as err:
        gpurisk.read_book(bad)
    assert secret not in str(err.value) and "no_such_database" in str(err.value)
    assert main(["revalue", bad, "--backend", "cpu"]) == 2
    out = capsys.readouterr()
    assert secret not in out.out + out.err and "no_such_database" in out.err


# ------------------------------------------------------------------ writing


def test_results_written_back_have_the_same_bits(pg):
    book = Book.from_frames(**_synthetic_frames(1500))
    risk = gpurisk.revalue(book, backend="cpu")
    run = risk.write(pg, table="nightly")
    for name, frame in (("accounts", risk.accounts), ("positions", risk.positions)):
        back = _read_back(pg, f"nightly_{name}")
        assert back["run_id"].unique().to_list() == [run]
        assert back.drop("run_id").equals(_labels_as_text(frame).with_columns(
            pl.col(pl.Int8).cast(pl.Int16), pl.col(pl.Int32).cast(pl.Int64) if name == "accounts" else pl.col("size")))
    runs = _read_back(pg, "nightly_runs")
    assert runs["run_id"].to_list() == [run] and runs["kind"].to_list() == ["revalue"]
    assert '"nightly_positions": %d' % book.n_positions in runs["tables"][0]


def test_a_second_write_replaces_the_first(pg):
    book = Book.from_frames(**tiny_frames())
    first = gpurisk.revalue(book, backend="cpu").write(pg)
    second = gpurisk.Engine(book, backend="cpu").revalue({"BTCUSDT": 50_000.0}).write(pg)
    back = _read_back(pg, "gpurisk_positions")
    assert back["run_id"].unique().to_list() == [second] != [first]
    assert back.height == 4 and set(back["mark_price"].to_list()) == {50_000.0, 3_000.0}
    assert sorted(_read_back(pg, "gpurisk_runs")["run_id"].to_list()) == sorted([first, second])


@pytest.mark.parametrize("step", ["db-0", "db-1", "db-commit"])
def test_a_killed_write_leaves_the_previous_result(pg, step):
    book = Book.from_frames(**tiny_frames())
    previous = gpurisk.revalue(book, backend="cpu").write(pg)
    script = textwrap.dedent(f"""
        import gpurisk
        from gpurisk.book import Book
        import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
        from books import tiny_frames
        engine = gpurisk.Engine(Book.from_frames(**tiny_frames()), backend="cpu")
        engine.revalue({{"BTCUSDT": 40_000.0}}).write({pg!r})
        print("not killed")
    """)
    env = dict(os.environ, GPURISK_TEST_OUTPUT_FAULT=f"{step}:kill")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    for name, rows in (("accounts", 3), ("positions", 4)):
        back = _read_back(pg, f"gpurisk_{name}")
        assert back.height == rows and back["run_id"].unique().to_list() == [previous]
    assert _read_back(pg, "gpurisk_runs")["run_id"].to_list() == [previous]
    stray = _sql(pg, "SELECT count(*) FROM pg_tables WHERE tablename LIKE '\\_gpurisk\\_%'")[0][0]
    assert stray == 0


def test_stress_results_to_postgres(pg):
    from gpurisk.stress import shock_grid, stress

    book = Book.from_frames(**_synthetic_frames(400))
    res = stress(book, shock_grid(-0.4, 0.2, 4), backend="cpu", policy=["queue", "rap"], progress=False)
    run = res.write(pg, book=book, table="night")
    for name in ("summary", "liquidations", "adl_fills", "haircuts", "prices", "policy_comparison"):
        back = _read_back(pg, f"night_{name}")
        frame = res.policy_comparison() if name == "policy_comparison" else getattr(res, name)
        assert back.height == frame.height and set(back["run_id"].to_list()) <= {run}
    summary = _read_back(pg, "night_summary").drop("run_id")
    assert summary["deficit"].to_list() == res.summary["deficit"].to_list()


# ------------------------------------------------------------------ command line


def test_cli_synth_revalue_and_stress_with_uris(pg, capsys):
    secret = "pw-not-needed-by-trust"
    uri = with_options(pg, password=secret)
    assert main(["synth", uri, "--accounts", "300", "--seed", "4"]) == 0
    assert main(["revalue", uri, "--backend", "cpu", "--out", uri, "--out-table", "eod"]) == 0
    book = gpurisk.read_book(pg)
    assert book.n_accounts == gpurisk.synthetic_book(300, seed=4).n_accounts
    positions = _read_back(pg, "eod_positions")
    assert positions.height == book.n_positions
    expected = gpurisk.revalue(book, backend="cpu").positions
    assert positions["liq_price"].equals(expected["liq_price"])
    assert main(["stress", uri, "--grid", "-0.3", "0.1", "3", "--backend", "cpu", "--quiet", "--out", uri,
                 "--no-report"]) == 0
    assert _read_back(pg, "gpurisk_stress_summary").height == 3
    out = capsys.readouterr()
    assert secret not in out.out + out.err and "***" in out.out


def test_cli_names_the_database_tables_to_read(pg, capsys, tmp_path):
    frames = tiny_frames()
    _load(pg, {("open_positions" if k == "positions" else k): v for k, v in frames.items()}, ddl=None)
    assert main(["revalue", pg, "--backend", "cpu", "--db-table", "positions=open_positions"]) == 0
    assert main(["revalue", pg, "--backend", "cpu",
                 "--db-query", "positions=SELECT * FROM open_positions WHERE symbol = 'BTCUSDT'"]) == 0
    assert main(["revalue", pg, "--backend", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "positions: table is missing: no table positions" in err
    assert main(["revalue", pg, "--backend", "cpu", "--db-table", "positions"]) == 2
    assert "expected TABLE=VALUE" in capsys.readouterr().err
    assert main(["revalue", pg, "--backend", "cpu", "--db-table", "trades=open_positions"]) == 2
    assert "unknown book table(s) trades" in capsys.readouterr().err
    assert main(["revalue", str(tmp_path), "--backend", "cpu", "--db-table", "positions=open_positions"]) == 2
    assert "name tables of a postgresql:// BOOK" in capsys.readouterr().err


def test_an_output_place_the_database_refuses_is_named_before_any_compute(pg, capsys):
    _load(pg, tiny_frames(), ddl=None)
    assert main(["revalue", pg, "--backend", "cpu", "--out", pg, "--out-table", "no_such_schema.eod"]) == 2
    err = capsys.readouterr()
    assert "schema no_such_schema does not exist" in err.err and "Traceback" not in err.err
    assert "reading" not in err.out  # refused before the book was read
    with pytest.raises(db.DatabaseError, match="no_such_schema"):
        gpurisk.revalue(Book.from_frames(**tiny_frames()), backend="cpu").write(pg, table="no_such_schema.eod")


def test_redact_keeps_everything_but_the_password():
    assert db.redact("postgresql:///prod?host=/var/run/postgresql&password=x&port=5433") == \
        "postgresql:///prod?host=/var/run/postgresql&password=***&port=5433"
    assert db.redact("postgres://risk@db:5432/prod") == "postgres://risk@db:5432/prod"
    assert db.redact("postgresql://risk:p%40ss@h1:5432,h2:5432/prod") == "postgresql://risk:***@h1:5432,h2:5432/prod"


def test_cli_on_a_dask_cluster_reads_the_book_once_and_writes_back(pg, capsys):
    _load(pg, _synthetic_frames(300), ddl=None)
    assert main(["revalue", pg, "--backend", "cpu", "--workers", "1", "--out", pg, "--out-table", "dist"]) == 0
    expected = gpurisk.revalue(gpurisk.read_book(pg), backend="cpu").positions
    back = _read_back(pg, "dist_positions").drop("run_id")
    assert back.equals(_labels_as_text(expected).with_columns(pl.col(pl.Int8).cast(pl.Int16)))


def test_without_the_driver_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "adbc_driver_postgresql.dbapi", None)  # import fails
    with pytest.raises(db.DatabaseError, match=r"pip install 'gpurisk\[postgres\]'"):
        gpurisk.read_book("postgresql:///anything")


_FIXED_TEXT = "postgresql://risk:***@db.venue:5432/prod?sslmode=require&host=/run/postgresql&password= FATAL: (or)"
_password = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda p: p not in _FIXED_TEXT and quote(p, safe="") not in _FIXED_TEXT)


@given(password=_password)
@settings(max_examples=200, deadline=None)
def test_no_password_survives_redaction(password):
    encoded = quote(password, safe="")
    cases = ((f"postgresql://risk:{encoded}@db.venue:5432/prod?sslmode=require",
              "postgresql://risk:***@db.venue:5432/prod?sslmode=require"),
             (f"postgresql:///prod?host=/run/postgresql&password={encoded}",
              "postgresql:///prod?host=/run/postgresql&password=***"))
    for uri, shown in cases:
        assert db.redact(uri) == shown
        message = db._scrub(f"FATAL: {password} (or {encoded}) {uri}", uri)
        assert message == f"FATAL: *** (or ***) {shown}"


def test_inverse_book_round_trips_through_the_database(pg):
    """Contract types, settle assets and wallets per asset travel with the tables; the results'
    asset columns are written as text."""
    book = gpurisk.synthetic_book(200, seed=4, inverse_markets=2)
    db.write_book(pg, book)
    back = gpurisk.read_book(pg)
    assert back.assets == book.assets and back.inverse.tolist() == book.inverse.tolist()
    want = gpurisk.revalue(book, venue="bitmex", backend="cpu")
    got = gpurisk.revalue(back, venue="bitmex", backend="cpu")
    assert got.accounts.equals(want.accounts) and got.positions.equals(want.positions)
    want.write(pg, table="inv")
    acc = _read_back(pg, "inv_accounts")
    assert sorted(set(acc["asset"].to_list())) == ["BTC", "ETH", "USDT"]
    assert acc.height == book.n_accounts
