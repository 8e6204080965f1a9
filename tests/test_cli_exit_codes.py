"""The CLI's exit-code rule (README, "Exit codes"), each case as a user meets it, in a
subprocess: 0 done; 2 bad input or usage, one line per problem on stderr and no traceback;
130 interrupted (SIGINT), one line, nothing written; 1 internal error, a traceback and a line
asking to report it with the version. A closed stdout (``| head``) ends quietly with 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

import gpurisk

ROOT = Path(__file__).resolve().parent.parent


def env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def gpurisk_cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpurisk.cli", *map(str, args)], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=300)


def assert_input_error(res, *needles, lines=None):
    """Exit 2; every stderr line is one problem, prefixed with the command; no traceback."""
    assert res.returncode == 2, (res.returncode, res.stderr)
    err = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr and err, res.stderr
    assert all(line.startswith("gpurisk ") for line in err), err
    if lines is not None:
        assert len(err) == lines, err
    for n in needles:
        assert n in res.stderr, (n, res.stderr)


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "book"
    assert gpurisk_cli("synth", d, "--accounts", 60, cwd=d.parent).returncode == 0
    return d


# ---- 0: done -----------------------------------------------------------------------------

def test_done_exits_0(book, tmp_path):
    res = gpurisk_cli("revalue", book, "--backend", "cpu", "--out", tmp_path / "r", cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert (tmp_path / "r" / "positions.parquet").exists()


def test_python_dash_m_gpurisk_is_the_command(book, tmp_path):
    """``python -m gpurisk`` runs the same command and passes its exit status through."""
    res = subprocess.run([sys.executable, "-m", "gpurisk", "revalue", book, "--backend", "cpu", "--out",
                          tmp_path / "r"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and (tmp_path / "r" / "accounts.parquet").exists(), res.stderr
    res = subprocess.run([sys.executable, "-m", "gpurisk", "revalue"], cwd=tmp_path, env=env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "usage: gpurisk revalue" in res.stderr


# ---- 2: bad input or usage -------------------------------------------------------------

def test_usage_error_exits_2(tmp_path):
    res = gpurisk_cli("revalue", cwd=tmp_path)  # BOOK missing: argparse's usage and one line
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "the following arguments are required: book" in res.stderr


@pytest.mark.parametrize("item", ["BTCUSDT=abc", "BTCUSDT", "=5"])
def test_bad_mark_option_exits_2(book, tmp_path, item):
    res = gpurisk_cli("revalue", book, "--backend", "cpu", "--mark", item, cwd=tmp_path)
    assert_input_error(res, lines=1)


def test_bad_mark_option_is_refused_before_reading_the_book(tmp_path):
    res = gpurisk_cli("revalue", tmp_path / "no-such-book", "--mark", "BTCUSDT=abc", cwd=tmp_path)
    assert_input_error(res, "--mark expects SYMBOL=PRICE", lines=1)


@pytest.mark.parametrize("content,needle", [
    ("", "empty"),                                                     # an empty file
    ("sym,price\nBTCUSDT,1\n", "column 'symbol' is missing"),          # wrong columns
    ("symbol,mark_price\nBTCUSDT,abc\n", "'mark_price' must be a number"),  # text prices
    ("symbol,mark_price\n", "has no rows"),
])
def test_bad_marks_file_exits_2(book, tmp_path, content, needle):
    f = tmp_path / "marks.csv"
    f.write_text(content)
    assert_input_error(gpurisk_cli("revalue", book, "--backend", "cpu", "--marks", f, cwd=tmp_path), needle)


def test_marks_file_with_wrong_columns_names_each_one(book, tmp_path):
    f = tmp_path / "marks.csv"
    f.write_text("sym,price\nBTCUSDT,1\n")
    res = gpurisk_cli("revalue", book, "--backend", "cpu", "--marks", f, cwd=tmp_path)
    assert_input_error(res, "'symbol' is missing", "'mark_price' is missing", lines=2)


@pytest.mark.parametrize("name,content,needle", [
    ("empty.csv", b"", "cannot read the scenarios file"),
    ("empty.parquet", b"", "cannot read the scenarios file"),
    ("corrupt.parquet", b"PAR1 this is not parquet at all PAR1", "cannot read the scenarios file"),
    ("header.csv", b"scenario,symbol,shock\n", "has no rows"),
    ("text.csv", b"scenario,symbol,shock\n0,*,abc\n", "'shock' must be a number"),
    ("cols.csv", b"a,b\n1,2\n", "'scenario' is missing"),
])
def test_bad_scenarios_file_exits_2(book, tmp_path, name, content, needle):
    f = tmp_path / name
    f.write_bytes(content)
    res = gpurisk_cli("stress", book, "--backend", "cpu", "--scenarios", f, "--quiet", cwd=tmp_path)
    assert_input_error(res, needle)


def test_report_on_foreign_parquet_exits_2(tmp_path):
    d = tmp_path / "foreign"
    d.mkdir()
    pl.DataFrame({"x": [1]}).write_parquet(d / "accounts.parquet")
    pl.DataFrame({"y": [1]}).write_parquet(d / "positions.parquet")
    res = gpurisk_cli("report", d, "--out", tmp_path / "r.html", cwd=tmp_path)
    assert_input_error(res, "is not a complete gpurisk result", lines=1)  # no manifest: refused first
    assert not (tmp_path / "r.html").exists()


def test_report_on_truncated_parquet_exits_2(book, tmp_path):
    assert gpurisk_cli("revalue", book, "--backend", "cpu", "--out", tmp_path / "r", cwd=tmp_path).returncode == 0
    p = tmp_path / "r" / "positions.parquet"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    res = gpurisk_cli("report", tmp_path / "r", "--out", tmp_path / "r.html", cwd=tmp_path)
    assert_input_error(res, "does not match its manifest.json", lines=1)


def test_report_on_foreign_stress_directory_exits_2(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    pl.DataFrame({"x": [1.0]}).write_parquet(d / "summary.parquet")
    res = gpurisk_cli("report", "--stress", d, "--out", tmp_path / "r.html", cwd=tmp_path)
    assert_input_error(res, "is not a complete gpurisk result", lines=1)


def test_account_ids_beyond_int64_in_csv_exit_2(tmp_path):
    d = tmp_path / "book"
    assert gpurisk_cli("synth", d, "--accounts", 20, "--format", "csv", cwd=tmp_path).returncode == 0
    lines = (d / "accounts.csv").read_text().splitlines()
    lines[1] = "18446744073709551615," + lines[1].split(",", 1)[1]  # 2^64 - 1
    (d / "accounts.csv").write_text("\n".join(lines) + "\n")
    (d / "manifest.json").unlink()  # edited on purpose: no longer the book gpurisk wrote
    res = gpurisk_cli("revalue", d, "--backend", "cpu", cwd=tmp_path)
    assert_input_error(res, "accounts.account_id: must fit a signed 64-bit integer", "18446744073709551615")


@pytest.mark.parametrize("command", [["demo", "--out", "d"], ["synth", "s"], ["stress", "--quiet"]])
def test_synthetic_book_too_large_for_memory_exits_2_before_allocating(tmp_path, command):
    t = time.perf_counter()
    res = gpurisk_cli(*command, "--accounts", 10**15, "--backend", "cpu", cwd=tmp_path) if command[0] != "synth" \
        else gpurisk_cli(*command, "--accounts", 10**15, cwd=tmp_path)
    assert_input_error(res, "needs about", "GiB of memory", "is available", lines=1)
    assert time.perf_counter() - t < 60 and not any(tmp_path.iterdir())  # refused up front


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_non_positive_accounts_is_a_usage_error(tmp_path, value):
    res = gpurisk_cli("synth", tmp_path / "s", "--accounts", value, cwd=tmp_path)
    assert res.returncode == 2 and "whole number >= 1" in res.stderr and "Traceback" not in res.stderr


def test_memory_estimate_scales_with_accounts(monkeypatch):
    from gpurisk import cli_common  # where the check lives (gpurisk.cli re-exports it)

    monkeypatch.setattr(cli_common, "_available_memory", lambda: 100 * cli_common.SYNTH_BYTES_PER_ACCOUNT)
    cli_common._check_synthetic_size(100)
    with pytest.raises(cli_common.InputError, match="use at most about 100 accounts"):
        cli_common._check_synthetic_size(101)


# ---- 130: interrupted --------------------------------------------------------------------

def test_sigint_exits_130_with_one_line_and_nothing_written(tmp_path):
    out = tmp_path / "stress-out"
    p = subprocess.Popen(
        [sys.executable, "-m", "gpurisk.cli", "stress", "--accounts", "20000", "--grid", "-0.5", "0.5", "20000",
         "--summary-only", "--backend", "cpu", "--quiet", "--out", str(out)], cwd=tmp_path, env=env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    try:
        assert "stress:" in p.stdout.readline() + p.stdout.readline()  # the book is built, the run begins
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert err.strip().splitlines() == ["gpurisk stress: interrupted"], err
    assert not out.exists()


# ---- 1: internal error -------------------------------------------------------------------

def test_internal_error_exits_1_with_traceback_and_a_report_line(tmp_path):
    code = ("import sys, gpurisk.cli as cli\n"
            "def broken(args):\n    raise RuntimeError('an internal bug')\n"
            "cli.cmd_synth = broken\n"
            "sys.exit(cli.main(['synth', 'x']))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env(), capture_output=True, text=True)
    assert res.returncode == 1
    assert "Traceback (most recent call last)" in res.stderr and "RuntimeError: an internal bug" in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("gpurisk synth: internal error in gpurisk " + gpurisk.__version__)
    assert "please report it" in last


# ---- a closed stdout ---------------------------------------------------------------------

@pytest.mark.parametrize("command", [["revalue", "BOOK", "--out", "OUT"], ["stress", "BOOK", "--grid", "-0.2", "0.2", "3",
                                                                           "--quiet", "--out", "OUT", "--no-report"]])
def test_closed_stdout_ends_quietly_and_still_writes(book, tmp_path, command):
    out = tmp_path / "out"
    args = [str(book) if a == "BOOK" else str(out) if a == "OUT" else a for a in command]
    p = subprocess.Popen([sys.executable, "-m", "gpurisk.cli", *args, "--backend", "cpu"], cwd=tmp_path, env=env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()  # `| head -1`
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=300)
    assert p.returncode == 0, err
    assert err == "", err  # no BrokenPipeError, no "Exception ignored"
    assert any(out.glob("*.parquet"))  # the work was finished: the results are there
