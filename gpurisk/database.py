"""Books read from PostgreSQL, and results written back to it.

The driver is ADBC's PostgreSQL driver (``adbc-driver-postgresql``, the ``postgres`` extra):
it moves whole tables with ``COPY ... (FORMAT binary)`` straight into Arrow and back, with
no per-row Python, and it connects through libpq, so a URI may leave out whatever the
standard ``PG*`` environment variables or ``~/.pgpass`` give (bench/RESULTS.md has the
figures against ConnectorX and a CSV export read by Polars).

Reading (:func:`read_book`): the four input tables are read in one ``REPEATABLE READ, READ
ONLY`` transaction, so a book is one moment of the database even while the venue writes to
it. Each table is a table name (default: markets, tiers, accounts, positions, found on the
connection's ``search_path``) or one SQL query. The frames then go through
``Book.from_frames``: the same validation, with the same messages, as a book directory.

Writing (:func:`write_frames`): every table of a result is COPYed into a staging table and
swapped in place of the previous one (``DROP`` + ``ALTER TABLE ... RENAME``) in one
transaction, with a row in ``<table>_runs``. Readers see the previous result or the new
one, never half of one; a run killed at any point leaves the previous result as it was (the
server rolls the transaction back). Each row carries the ``run_id`` of its run.

Passwords never reach a message: every URI shown goes through :func:`redact`, and driver
messages are scrubbed of the password.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import re
import uuid
from urllib.parse import unquote, urlsplit

from .book import Book, BookError, Problem

SCHEMES = ("postgresql://", "postgres://")
BOOK_TABLES = ("markets", "tiers", "accounts", "positions")
RUN_ID = "run_id"


class DatabaseError(ValueError):
    """The database cannot be reached, read or written; the message names the (redacted)
    URI, the table and the server's reason. (A ValueError: the CLI exits 2, one line.)"""


def is_database_uri(place) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URI."""
    return isinstance(place, str) and place.lower().startswith(SCHEMES)


def redact(uri: str) -> str:
    """The URI with any password (in the user part or a ``password=`` parameter) as ``***``;
    everything else exactly as given."""
    m = re.match(r"(?is)^([a-z][a-z0-9+.-]*://)([^/?#]*)(.*)$", uri)
    if not m:
        return uri
    scheme, netloc, rest = m.groups()
    if "@" in netloc:
        user, _, hosts = netloc.rpartition("@")
        netloc = (user.split(":", 1)[0] + ":***" if ":" in user else user) + "@" + hosts
    path, sep, query = rest.partition("?")
    query = re.sub(r"(?i)(^|&)(password=)[^&#]*", r"\1\2***", query)
    return scheme + netloc + path + sep + query


def _secrets(uri: str) -> list[str]:
    """The password as written in the URI and as decoded (either may reach a message)."""
    parts = urlsplit(uri)
    out = [parts.password, unquote(parts.password)] if parts.password else []
    for item in parts.query.split("&"):  # libpq decodes %XX only ('+' stays '+')
        key, _, value = item.partition("=")
        if key.lower() == "password" and value:
            out += [value, unquote(value)]
    return sorted(set(out), key=len, reverse=True)


def _scrub(text: str, uri: str) -> str:
    for secret in _secrets(uri):
        text = text.replace(secret, "***")
    return text.replace(uri, redact(uri))


def _reason(exc: Exception, uri: str) -> str:
    """The server's or driver's reason, on one line, without the password."""
    text = str(exc).split("\n\nQuery was:")[0]  # the driver repeats the whole query: drop it
    text = re.sub(r"^[A-Z_]+: (\[libpq\] )?", "", text.strip())
    return _scrub(" ".join(line.strip() for line in text.splitlines() if line.strip()), uri)


def connect(uri: str, autocommit: bool = True):
    """An ADBC DB-API connection (DatabaseError, with the URI redacted, when it fails)."""
    try:
        import adbc_driver_postgresql.dbapi as adbc_pg
    except ImportError:
        raise DatabaseError("reading or writing PostgreSQL needs ADBC's PostgreSQL driver: "
                            "pip install 'gpurisk[postgres]' (or adbc-driver-postgresql)") from None
    try:
        return adbc_pg.connect(uri, autocommit=autocommit)
    except Exception as exc:
        raise DatabaseError(f"cannot connect to {redact(uri)}: {_reason(exc, uri)}") from None


@contextlib.contextmanager
def _driver_errors(uri: str, what: str):
    """Any driver error not handled nearer (some surface only when a result is fetched) as a
    DatabaseError saying what was being done, without the password."""
    try:
        yield
    except (DatabaseError, BookError):
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith("adbc_driver"):
            raise
        raise DatabaseError(f"{redact(uri)}: {what}: {_reason(exc, uri)}") from None


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _split_name(name: str) -> tuple[str | None, str]:
    """``schema.table`` or ``table`` (no quoting in the given name)."""
    schema, _, table = name.rpartition(".")
    if not table or any(not p.strip() for p in name.split(".")) or name.count(".") > 1:
        raise DatabaseError(f"table name {name!r}: give TABLE or SCHEMA.TABLE")
    return schema or None, table


def qualified(name: str) -> str:
    schema, table = _split_name(name)
    return (f"{_quote_ident(schema)}." if schema else "") + _quote_ident(table)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ------------------------------------------------------------------ reading


def book_sources(tables: dict | None = None, queries: dict | None = None) -> dict[str, tuple[str, str]]:
    """Per input table, ("table", name) or ("query", sql): the defaults, then ``tables``
    (table -> name in the database), then ``queries`` (table -> SQL)."""
    tables, queries = dict(tables or {}), dict(queries or {})
    unknown = sorted((set(tables) | set(queries)) - set(BOOK_TABLES))
    if unknown:
        raise ValueError(f"unknown book table(s) {', '.join(unknown)}; the tables are {', '.join(BOOK_TABLES)}")
    both = sorted(set(tables) & set(queries))
    if both:
        raise ValueError(f"give a table name or a query for {', '.join(both)}, not both")
    out = {t: ("table", tables.get(t, t)) for t in BOOK_TABLES}
    # The driver runs a query inside COPY (...): a closing semicolon would break it.
    out.update({t: ("query", q.strip().rstrip(";").strip()) for t, q in queries.items()})
    return out


def read_book(uri: str, tables: dict | None = None, queries: dict | None = None) -> Book:
    """Read markets, tiers, accounts and positions from PostgreSQL in one repeatable-read
    transaction, then validate them exactly as a book directory (BookError naming the table,
    column and rows at fault). ``tables``: {"positions": "venue.open_positions", ...};
    ``queries``: {"positions": "SELECT ...", ...}, one SQL query per table."""
    return Book.from_frames(**read_frames(uri, tables, queries))


def read_frames(uri: str, tables: dict | None = None, queries: dict | None = None) -> dict:
    """The four input tables as Polars frames, read in one snapshot (not validated)."""
    sources = book_sources(tables, queries)
    conn = connect(uri)
    try:
        with _driver_errors(uri, "reading the book"):
            cur = conn.cursor()
            _run(cur, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", uri)
            missing = _missing_tables(cur, sources, uri)
            if missing:
                raise BookError(missing)
            frames = {name: _read_table(cur, name, sql, uri) for name, sql in _book_queries(sources).items()}
            _run(cur, "COMMIT", uri)
            return frames
    finally:
        conn.close()


def _book_queries(sources: dict) -> dict[str, str]:
    return {name: (f"SELECT * FROM {qualified(src)}" if kind == "table" else src)
            for name, (kind, src) in sources.items()}


def _run(cur, sql: str, uri: str, what: str = "") -> None:
    try:
        cur.execute(sql)
    except Exception as exc:
        raise DatabaseError(f"{redact(uri)}{': ' + what if what else ''}: {_reason(exc, uri)}") from None


def _missing_tables(cur, sources: dict, uri: str) -> list[Problem]:
    """A Problem per named table the database does not have (all of them at once)."""
    named = [(name, src) for name, (kind, src) in sources.items() if kind == "table"]
    if not named:
        return []
    probes = ", ".join(f"to_regclass({_literal(qualified(src))}) IS NOT NULL" for _, src in named)
    _run(cur, f"SELECT {probes}", uri, "looking up the book's tables")
    found = cur.fetchone()
    return [Problem(name, "", f"table is missing: no table {src} in the database {redact(uri)} "
                              f"(give another name with tables=/--db-table, or a query)")
            for (name, src), ok in zip(named, found) if not ok]


def _read_table(cur, name: str, sql: str, uri: str):
    """One table as a Polars frame (Arrow from the driver's binary COPY, no per-row Python)."""
    try:
        cur.execute(sql)
        arrow = cur.fetch_arrow_table()
    except Exception as exc:
        raise BookError([Problem(name, "", f"cannot read it from {redact(uri)}: {_reason(exc, uri)}")]) from None
    return _to_polars(arrow)


def _to_polars(arrow):
    """Polars frame of a driver result. PostgreSQL types Arrow has no type for (numeric,
    enums, ...) arrive as opaque text: ``numeric`` becomes Float64 (as a Parquet decimal
    would), every other one stays text, which validation then names."""
    import pyarrow as pa
    import polars as pl

    columns, numeric = [], []
    for field, column in zip(arrow.schema, arrow.columns):
        if isinstance(field.type, pa.BaseExtensionType):
            column = pa.chunked_array([c.storage for c in column.chunks], type=field.type.storage_type)
            if (field.metadata or {}).get(b"POSTGRESQL:type") == b"numeric":
                numeric.append(field.name)
        columns.append(column)
    df = pl.from_arrow(pa.table(columns, names=arrow.column_names))
    # Text "NaN"/"Infinity" of numeric parse to the float values; the rest are decimals.
    return df.with_columns(pl.col(c).cast(pl.Float64) for c in numeric) if numeric else df


# ------------------------------------------------------------------ writing


def _arrow_for_copy(df, run_id: str | None):
    """Arrow for COPY: Enum / Categorical labels as text (PostgreSQL has no dictionary
    type); the run id as the first column."""
    import polars as pl

    casts = [pl.col(c).cast(pl.String) for c, t in df.schema.items()
             if isinstance(t, (pl.Enum, pl.Categorical))]
    if casts:
        df = df.with_columns(casts)
    if run_id is not None:
        df = df.select(pl.lit(run_id, dtype=pl.String).alias(RUN_ID), pl.all())
    return df.to_arrow()


def check_writable(uri: str, table: str) -> None:
    """Connect and check that the schema of ``table`` takes new tables (before any compute)."""
    schema, _ = _split_name(table)
    conn = connect(uri)
    try:
        with _driver_errors(uri, f"checking where to write {table}"):
            cur = conn.cursor()
            target = _literal(schema) if schema else "current_schema()"
            cur.execute(f"SELECT has_schema_privilege(oid, 'CREATE') FROM pg_namespace WHERE nspname = {target}")
            found = cur.fetchall()
    finally:
        conn.close()
    where = f"schema {schema}" if schema else "the first schema of the search_path"
    if not found:
        raise DatabaseError(f"{redact(uri)}: cannot write {table}: {where} does not exist"
                            + ("" if schema else " (the search_path names no existing schema)"))
    if not found[0][0]:
        raise DatabaseError(f"{redact(uri)}: cannot write {table}: no CREATE privilege on {where}")


def write_frames(uri: str, frames: dict, table: str, kind: str, meta: dict | None = None) -> str:
    """Write ``frames`` ({suffix: frame}) as tables ``<table>_<suffix>`` (``table`` may be
    ``schema.name``) in one transaction, each replacing the previous one, with a row in
    ``<table>_runs`` (run id, kind, time, row counts, ``meta``). Returns the run id, which
    every row carries in its ``run_id`` column."""
    schema, base = _split_name(table)
    prefix = f"{_quote_ident(schema)}." if schema else ""
    run = uuid.uuid4().hex[:12]
    targets = {f"{prefix}{_quote_ident(f'{base}_{suffix}')}": _arrow_for_copy(df, run)
               for suffix, df in frames.items()}
    runs = f"{prefix}{_quote_ident(base + '_runs')}"
    from . import __version__

    rows = {f"{base}_{suffix}": df.height for suffix, df in frames.items()}
    meta = {**(meta or {}), "gpurisk_version": __version__}
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record = [f"CREATE TABLE IF NOT EXISTS {runs} (run_id text PRIMARY KEY, kind text NOT NULL, "
              f"created timestamptz NOT NULL, tables jsonb NOT NULL, meta jsonb NOT NULL)",
              f"INSERT INTO {runs} VALUES ({_literal(run)}, {_literal(kind)}, {_literal(created)}, "
              f"{_literal(json.dumps(rows))}::jsonb, {_literal(json.dumps(meta, default=str))}::jsonb)"]
    _replace_tables(uri, targets, run, record)
    return run


def write_book(uri: str, book: Book, tables: dict | None = None) -> None:
    """Write a Book's four tables (as ``Book.frames()``) in one transaction, replacing
    tables of the same names; ``tables`` renames them as for read_book."""
    if book.collateral is not None:  # never written without it: a pooled venue needs it back
        raise BookError([Problem("collateral", "", "a database book holds the four tables only, for now: write a "
                                 "book with a collateral table to a directory (README \"Multi-asset collateral\")")])
    frames = book.frames()
    _replace_tables(uri, {qualified((tables or {}).get(t, t)): _arrow_for_copy(frames[t], None)
                          for t in BOOK_TABLES}, uuid.uuid4().hex[:12])


def _replace_tables(uri: str, targets: dict, run: str, then: list[str] = ()) -> None:
    """In one transaction: COPY each Arrow table of ``targets`` ({qualified name: table})
    into a staging table, drop the previous table of that name, rename the staging table
    into its place, run the statements ``then``, commit. Until the commit no reader sees
    any of it; a run killed before it leaves every previous table as it was.

    Test hook: GPURISK_TEST_OUTPUT_FAULT steps ``db-0``, ``db-1``, ... after each COPY and
    ``db-commit`` just before the commit (gpurisk.output)."""
    conn = connect(uri, autocommit=False)  # the driver opens the transaction; commit ends it
    try:
        _copy_and_swap(conn, uri, targets, run, then)
    finally:
        conn.close()  # without a commit the server rolls everything back


def _copy_and_swap(conn, uri: str, targets: dict, run: str, then) -> None:
    from .output import _fault

    with _driver_errors(uri, "writing"):
        cur = conn.cursor()
        for i, (target, arrow) in enumerate(targets.items()):
            schema, _, name = _unquoted(target)
            stage = f"_gpurisk_{run}_{i}"
            try:
                cur.adbc_ingest(stage, arrow, mode="create", db_schema_name=schema)
            except Exception as exc:
                raise DatabaseError(f"cannot write {name} to {redact(uri)}: {_reason(exc, uri)}; nothing was "
                                    f"written (an earlier result there is untouched)") from None
            _fault(f"db-{i}")
            in_schema = f"{_quote_ident(schema)}." if schema else ""
            _run(cur, f"DROP TABLE IF EXISTS {target}", uri, f"replacing {name}")
            _run(cur, f"ALTER TABLE {in_schema}{_quote_ident(stage)} RENAME TO {_quote_ident(name)}", uri,
                 f"replacing {name}")
        for sql in then:
            _run(cur, sql, uri, "recording the run")
        _fault("db-commit")
        try:
            conn.commit()
        except Exception as exc:
            raise DatabaseError(f"cannot commit to {redact(uri)}: {_reason(exc, uri)}; the earlier result "
                                f"is kept") from None


def _unquoted(qualified_name: str) -> tuple[str | None, str, str]:
    """(schema or None, '.', table) of a name built by ``qualified``."""
    parts = re.findall(r'"((?:[^"]|"")*)"', qualified_name)
    parts = [p.replace('""', '"') for p in parts]
    return (parts[0], ".", parts[1]) if len(parts) == 2 else (None, "", parts[0])
