"""Outputs and data safety (issue 13): results are written atomically, the output place is
checked before any compute, readers refuse what is incomplete or does not match its manifest.

Writers run in subprocesses and are killed (SIGKILL, SIGINT) or starved (a file-size limit)
at chosen points — the test hook GPURISK_TEST_OUTPUT_FAULT of gpurisk/output.py — and at
random times; afterwards the target holds the previous complete result, the new complete
one, or nothing: never a torn one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

import gpurisk
from gpurisk.book import read_book
from gpurisk.cli import main
from gpurisk.distributed import read_sharded_book, write_sharded
from gpurisk.output import FAULT_ENV, ManifestError, OutputError, check_place, read_manifest
from gpurisk.report import load_risk_tables, load_stress_tables
from gpurisk.stress import shock_grid, stress
from gpurisk.synthetic import synthetic_book

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("revalue", "stress", "book", "shard")

# The writer, as a child process: argv kind, out, seed. CHILD_FSIZE: a file-size limit set
# after the compute (SIGXFSZ ignored, so a write past it fails with EFBIG, as a full disk).
CHILD = r"""
import os, resource, signal, sys
kind, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
import gpurisk
from gpurisk.output import OutputError
from gpurisk.stress import shock_grid, stress
from gpurisk.synthetic import synthetic_book
book = synthetic_book(150, seed=seed)
if kind == "revalue":
    res = gpurisk.revalue(book, backend="cpu")
    res.accounts, res.positions
elif kind == "stress":
    res = stress(book, shock_grid(-0.3, 0.3, 3), backend="cpu")
fsize = int(os.environ.get("CHILD_FSIZE", "0"))
if fsize:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
print("ready", flush=True)
try:
    if kind == "revalue":
        res.write(out)
    elif kind == "stress":
        res.write(out, book=book)
    elif kind == "book":
        book.write(out)
    else:
        gpurisk.write_sharded(book, out, 3)
except OutputError as exc:
    print("OUTPUT-ERROR", exc, flush=True)
    sys.exit(3)
print("written", flush=True)
"""


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop(FAULT_ENV, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_child(kind, out, seed=1, timeout=120, **env):
    return subprocess.run([sys.executable, "-c", CHILD, kind, str(out), str(seed)], capture_output=True,
                          text=True, env=_env(**env), timeout=timeout)


def write_in_process(kind, out, seed=0):
    book = synthetic_book(150, seed=seed)
    if kind == "revalue":
        gpurisk.revalue(book, backend="cpu").write(out)
    elif kind == "stress":
        stress(book, shock_grid(-0.3, 0.3, 3), backend="cpu").write(out, book=book)
    elif kind == "book":
        book.write(out)
    else:
        write_sharded(book, out, 3)
    return read_manifest(out)


def read_back(kind, out):
    """Read a result the way its users do (every reader verifies the manifest)."""
    if kind == "revalue":
        return load_risk_tables(out).accounts.height
    if kind == "stress":
        return load_stress_tables(out).summary.height
    if kind == "book":
        return read_book(out).n_accounts
    return read_sharded_book(out).n_accounts


def assert_whole(kind, out, previous: dict | None, allow_new=True) -> str:
    """The target is the previous complete result, a new complete one, or nothing (when there was
    none before); never a mix. Returns which."""
    out = Path(out)
    if not out.exists():
        assert previous is None, "the previous result is gone"
        return "none"
    m = read_manifest(out)  # every file matches the manifest
    assert read_back(kind, out) > 0
    if previous is not None and m["run_id"] == previous["run_id"]:
        assert m == previous
        return "previous"
    assert allow_new, "a new result replaced the previous one although the writer failed"
    assert m["book_hash"] != (previous or {}).get("book_hash")
    return "new"


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


# ------------------------------------------------------------------ killed writers


class TestKilledWriter:
    """SIGKILL at each step of a write (after a file, after the manifest, between the two renames
    of the swap, after the swap) and at random times: the previous result or the new one, whole."""

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("step", ["0", "1", "manifest", "swap"])
    def test_killed_at_a_step_leaves_previous_or_new(self, tmp_path, kind, step):
        out = tmp_path / "out"
        previous = write_in_process(kind, out)
        r = run_child(kind, out, **{FAULT_ENV: f"{step}:kill"})
        assert r.returncode == -signal.SIGKILL, r.stderr
        got = assert_whole(kind, out, previous)
        assert got == ("new" if step == "swap" else "previous")
        again = write_in_process(kind, out, seed=2)  # the next writer clears what the killed one left
        assert read_manifest(out)["run_id"] == again["run_id"] and leftovers(out) == []

    @pytest.mark.parametrize("kind", ["revalue", "shard"])
    def test_killed_between_the_renames_is_restored(self, tmp_path, kind):
        out = tmp_path / "out"
        previous = write_in_process(kind, out)
        r = run_child(kind, out, **{FAULT_ENV: "aside:kill"})
        assert r.returncode == -signal.SIGKILL
        assert not out.exists()
        with pytest.raises(ManifestError, match=r"interrupted; the previous complete result is in .*\.out\.old-"):
            read_manifest(out)
        with pytest.raises((FileNotFoundError, ManifestError), match="previous complete result"):
            read_back(kind, out)
        # The next writer puts the previous result back before anything else; killed early, it
        # leaves exactly that.
        r = run_child(kind, out, **{FAULT_ENV: "1:kill"})
        assert r.returncode == -signal.SIGKILL
        assert assert_whole(kind, out, previous) == "previous"

    def test_a_first_write_killed_leaves_nothing(self, tmp_path):
        out = tmp_path / "new"
        r = run_child("book", out, **{FAULT_ENV: "2:kill"})
        assert r.returncode == -signal.SIGKILL
        assert assert_whole("book", out, None) == "none"
        with pytest.raises(FileNotFoundError, match="does not exist"):
            read_book(out)

    @pytest.mark.parametrize("seed", range(4))
    def test_killed_at_a_random_time(self, tmp_path, seed):
        kind = KINDS[seed % len(KINDS)]
        out = tmp_path / "out"
        previous = write_in_process(kind, out)
        proc = subprocess.Popen([sys.executable, "-c", CHILD, kind, str(out), "1"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env(**{FAULT_ENV: "*:sleep=0.05"}))
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(random.Random(seed).uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert assert_whole(kind, out, previous) in ("previous", "new")


class TestInterruptedWriter:
    """SIGINT (Ctrl-C) in the middle of a write: the previous result stays, nothing is left over."""

    @pytest.mark.parametrize("kind", KINDS)
    def test_sigint_keeps_the_previous_result(self, tmp_path, kind):
        out = tmp_path / "out"
        previous = write_in_process(kind, out)
        r = run_child(kind, out, **{FAULT_ENV: "1:int"})
        assert r.returncode != 0 and "KeyboardInterrupt" in r.stderr
        assert assert_whole(kind, out, previous, allow_new=False) == "previous"
        assert leftovers(out) == []  # the temporary directory was removed on the way out


class TestFullDisk:
    """A write that fails for lack of space (a file-size limit, SIGXFSZ ignored): a clear
    OutputError, the previous result untouched, no temporary directory left."""

    @pytest.mark.parametrize("kind", KINDS)
    def test_full_disk_keeps_the_previous_result(self, tmp_path, kind):
        out = tmp_path / "out"
        previous = write_in_process(kind, out)
        r = run_child(kind, out, CHILD_FSIZE=3000)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "OUTPUT-ERROR cannot write" in r.stdout and "earlier result there is untouched" in r.stdout
        assert assert_whole(kind, out, previous, allow_new=False) == "previous"
        assert leftovers(out) == []

    def test_cli_full_disk_is_one_line_and_exit_2(self, tmp_path):
        book_dir = tmp_path / "book"
        synthetic_book(150, seed=0).write(book_dir)
        script = ("import resource, signal, sys\n"
                  "from gpurisk.cli import main\n"
                  "import gpurisk\n"
                  "gpurisk.revalue(gpurisk.synthetic_book(3), backend='cpu')  # kernels built before the limit\n"
                  "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                  "resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))\n"
                  "sys.exit(main(sys.argv[1:]))\n")
        r = subprocess.run([sys.executable, "-c", script, "revalue", str(book_dir), "--backend", "cpu",
                            "--out", str(tmp_path / "res")], capture_output=True, text=True, env=_env(), timeout=120)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and "cannot write" in r.stderr
        assert not (tmp_path / "res").exists() and leftovers(tmp_path / "res") == []


# ------------------------------------------------------------------ concurrent writers


class TestConcurrentWriters:
    """Two writers of one place: the second is refused at once with a clear error; the first
    finishes and its result reads back."""

    def test_second_writer_gets_the_lock_error(self, tmp_path):
        out = tmp_path / "out"
        slow = subprocess.Popen([sys.executable, "-c", CHILD, "book", str(out), "1"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env(**{FAULT_ENV: "*:sleep=0.5"}))
        lock = tmp_path / ".out.gpurisk-lock"
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()):
            assert time.monotonic() < deadline and slow.poll() is None, "the first writer never started"
            time.sleep(0.02)
        second = run_child("book", out, seed=2)
        assert second.returncode == 3
        assert f"{out}: another gpurisk run is writing it" in second.stdout
        assert slow.wait(timeout=60) == 0, slow.stderr.read()
        assert assert_whole("book", out, None) == "new"
        assert read_book(out).n_accounts == synthetic_book(150, seed=1).n_accounts
        assert not lock.exists()

    def test_cli_is_refused_before_computing(self, tmp_path, capsys):
        book_dir = tmp_path / "book"
        synthetic_book(100, seed=0).write(book_dir)
        holder = subprocess.Popen(  # another process holds the place
            [sys.executable, "-c", "import sys, time\nfrom gpurisk.output import locked\n"
             "with locked(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n", str(tmp_path / "res")],
            stdout=subprocess.PIPE, text=True, env=_env())
        try:
            assert holder.stdout.readline().strip() == "held"
            assert main(["revalue", str(book_dir), "--backend", "cpu", "--out", str(tmp_path / "res")]) == 2
        finally:
            holder.kill()
            holder.wait()
        cap = capsys.readouterr()
        assert "another gpurisk run is writing it" in cap.err
        assert "kernel pass" not in cap.out  # nothing was computed
        assert main(["revalue", str(book_dir), "--backend", "cpu", "--out", str(tmp_path / "res")]) == 0


# ------------------------------------------------------------------ safe output places


class TestOutputIsInput:
    """--out equal to, inside, or holding the input book is refused before any compute."""

    def test_out_equal_to_the_book(self, tmp_path, capsys):
        book_dir = tmp_path / "book"
        synthetic_book(100, seed=0).write(book_dir)
        before = read_manifest(book_dir)
        for out, word in ((book_dir, "is the input"), (book_dir / "res", "is inside the input"),
                          (tmp_path, "holds the input")):
            assert main(["revalue", str(book_dir), "--backend", "cpu", "--out", str(out)]) == 2
            cap = capsys.readouterr()
            assert word in cap.err and "kernel pass" not in cap.out, cap.err
            assert main(["stress", str(book_dir), "--backend", "cpu", "--grid", "-0.1", "0.1", "2",
                         "--out", str(out)]) == 2
            assert word in capsys.readouterr().err
        assert read_manifest(book_dir) == before and read_book(book_dir).n_accounts > 0

    def test_api_writer_refuses_its_input(self, tmp_path):
        book_dir = tmp_path / "book"
        synthetic_book(100, seed=0).write(book_dir)
        risk = gpurisk.revalue(read_book(book_dir), backend="cpu")
        with pytest.raises(OutputError, match="is the input"):
            risk.write(book_dir, inputs=[book_dir])
        with pytest.raises(OutputError, match="not revalue"):  # a book is not replaced by results
            risk.write(book_dir)
        read_book(book_dir)


class TestOutputPlace:
    """An existing file, a path under a file, an unwritable parent, a foreign non-empty directory:
    refused before any compute, one line, exit 2."""

    @pytest.fixture
    def book_dir(self, tmp_path):
        synthetic_book(100, seed=0).write(tmp_path / "book")
        return tmp_path / "book"

    def test_existing_file(self, tmp_path, book_dir, capsys):
        f = tmp_path / "file.txt"
        f.write_text("keep me")
        assert main(["revalue", str(book_dir), "--backend", "cpu", "--out", str(f)]) == 2
        cap = capsys.readouterr()
        assert "is an existing file" in cap.err and "Traceback" not in cap.err and "kernel pass" not in cap.out
        assert f.read_text() == "keep me"

    def test_under_a_file(self, tmp_path, book_dir, capsys):
        f = tmp_path / "file.txt"
        f.write_text("keep me")
        assert main(["stress", "--accounts", "100", "--backend", "cpu", "--out", str(f / "sub" / "dir")]) == 2
        assert "which is a file, not a directory" in capsys.readouterr().err
        assert main(["synth", str(f / "b"), "--accounts", "50"]) == 2
        assert main(["report", str(book_dir), "--out", str(f / "r.html")]) == 2
        assert "which is a file" in capsys.readouterr().err

    def test_unwritable_parent(self, tmp_path, monkeypatch):
        monkeypatch.setattr(os, "access", lambda *a, **k: False)  # as a non-root user sees a read-only dir
        with pytest.raises(OutputError, match="permission denied"):
            check_place(tmp_path / "x" / "y", "revalue")

    def test_foreign_non_empty_directory(self, tmp_path, book_dir, capsys):
        d = tmp_path / "mine"
        d.mkdir()
        (d / "notes.txt").write_text("keep me")
        assert main(["revalue", str(book_dir), "--backend", "cpu", "--out", str(d)]) == 2
        assert "not a gpurisk result" in capsys.readouterr().err
        assert (d / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------ readers refuse


class TestReportRefuses:
    """gpurisk report on a directory without a manifest, with a truncated file, or a stress
    directory holding only the summary: exit 2, one clear line, no traceback."""

    @pytest.fixture
    def results(self, tmp_path):
        book = synthetic_book(150, seed=0)
        gpurisk.revalue(book, backend="cpu").write(tmp_path / "res")
        stress(book, shock_grid(-0.3, 0.3, 3), backend="cpu").write(tmp_path / "st", book=book)
        return tmp_path / "res", tmp_path / "st"

    def report(self, capsys, *args):
        code = main(["report", *map(str, args)])
        err = capsys.readouterr().err
        return code, err

    def test_valid_results_are_accepted(self, tmp_path, results, capsys):
        code, err = self.report(capsys, results[0], "--stress", results[1], "--out", tmp_path / "r.html")
        assert code == 0 and (tmp_path / "r.html").exists() and err == ""
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.html")] == []

    def test_without_manifest(self, tmp_path, results, capsys):
        (results[0] / "manifest.json").unlink()
        code, err = self.report(capsys, results[0], "--out", tmp_path / "r.html")
        assert code == 2 and "manifest.json is missing" in err and "interrupted" in err
        assert "Traceback" not in err and not (tmp_path / "r.html").exists()

    def test_truncated_file(self, tmp_path, results, capsys):
        f = results[0] / "positions.parquet"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        code, err = self.report(capsys, results[0], "--out", tmp_path / "r.html")
        assert code == 2 and "positions.parquet has" in err and "does not match its manifest.json" in err
        assert "Traceback" not in err

    def test_stress_with_only_the_summary(self, tmp_path, results, capsys):
        only = tmp_path / "only"
        only.mkdir()
        (results[1] / "summary.parquet").rename(only / "summary.parquet")
        code, err = self.report(capsys, "--stress", only, "--out", tmp_path / "r.html")
        assert code == 2 and "manifest.json is missing" in err
        code, err = self.report(capsys, only, "--out", tmp_path / "r.html")  # given alone
        assert code == 2 and "manifest.json is missing" in err
        code, err = self.report(capsys, "--stress", results[1], "--out", tmp_path / "r.html")
        assert code == 2 and "summary.parquet is missing" in err

    def test_report_out_over_a_result_file(self, results, capsys):
        code, err = self.report(capsys, results[0], "--out", results[0] / "positions.parquet")
        assert code == 2 and "is a file of the input" in err
        read_manifest(results[0])


class TestShardedBookManifest:
    """A sharded book whose writer was killed, or that lost its manifest, is never read as the
    whole book."""

    def test_killed_synth_shards_is_refused(self, tmp_path, capsys):
        out = tmp_path / "sharded"
        r = subprocess.run([sys.executable, "-m", "gpurisk.cli", "synth", str(out), "--accounts", "300",
                            "--shards", "3"], capture_output=True, text=True, timeout=120,
                           env=_env(**{FAULT_ENV: "4:kill"}))  # after markets, tiers, shard 0
        assert r.returncode == -signal.SIGKILL
        assert not out.exists()
        assert main(["revalue", str(out), "--backend", "cpu"]) == 2
        assert "does not exist" in capsys.readouterr().err

    def test_sharded_book_without_manifest_is_refused(self, tmp_path, capsys):
        out = tmp_path / "sharded"
        assert main(["synth", str(out), "--accounts", "300", "--shards", "3"]) == 0
        (out / "manifest.json").unlink()
        with pytest.raises(ManifestError, match="manifest.json is missing"):
            read_sharded_book(out)
        capsys.readouterr()
        assert main(["revalue", str(out), "--backend", "cpu"]) == 2
        assert "manifest.json is missing" in capsys.readouterr().err

    def test_a_shard_that_does_not_match_is_refused(self, tmp_path):
        out = write_sharded(synthetic_book(300, seed=0), tmp_path / "sharded", 3)
        f = out / "shards" / "shard-00002" / "positions.parquet"
        f.write_bytes(f.read_bytes()[:-10])
        with pytest.raises(ManifestError, match="shard-00002/positions.parquet has"):
            read_sharded_book(out)


class TestReadBook:
    """read_book accepts a user's own directory without a manifest, and verifies one when present."""

    def test_with_and_without_manifest(self, tmp_path):
        book = synthetic_book(100, seed=0)
        book.write(tmp_path / "b")
        m = read_manifest(tmp_path / "b")
        assert m["kind"] == "book" and m["files"]["positions.parquet"]["rows"] == book.n_positions
        assert {"format_version", "book_hash", "marks", "gpurisk_version", "run_id", "created"} <= set(m)
        f = tmp_path / "b" / "accounts.parquet"
        f.write_bytes(f.read_bytes()[:-1] + b"\0")
        with pytest.raises(ManifestError, match="accounts.parquet: sha256 differs.*delete"):
            read_book(tmp_path / "b")
        own = tmp_path / "own"
        own.mkdir()
        for name, df in book.frames().items():
            df.write_parquet(own / f"{name}.parquet")
        (own / "manifest.json").write_text(json.dumps({"someone": "else"}))  # not gpurisk's: ignored
        assert read_book(own).n_positions == book.n_positions

    def test_result_manifest_records_the_run(self, tmp_path):
        book = synthetic_book(100, seed=0)
        book.write(tmp_path / "b")
        risk = gpurisk.revalue(read_book(tmp_path / "b"), venue="bybit", backend="cpu", marks={"BTCUSDT": 50_000.0})
        risk.write(tmp_path / "r")
        m = read_manifest(tmp_path / "r", kind="revalue")
        assert m["book_hash"] == read_manifest(tmp_path / "b")["book_hash"]
        assert m["venue"] == "bybit" and m["backend"] == "cpu" and m["marks"]["BTCUSDT"] == 50_000.0
        assert m["venue_conventions"]["adl_score"] == "pnl_leverage" and m["venue_conventions"]["im_base"] == "entry"
        assert m["files"]["accounts.parquet"]["rows"] == pl.read_parquet(tmp_path / "r" / "accounts.parquet").height


def test_the_swap_exchanges_in_one_step_or_changes_nothing(tmp_path):
    """renameat2(RENAME_EXCHANGE) trades the two directories whole; where the filesystem
    cannot, nothing moves and the two-rename swap is used."""
    from gpurisk.output import _exchange

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("new")
    (b / "x").write_text("previous")
    done = _exchange(a, b)
    assert (b / "x").read_text() == ("new" if done else "previous")
    assert (a / "x").read_text() == ("previous" if done else "new")
