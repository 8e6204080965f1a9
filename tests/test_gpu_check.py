"""The device check (bench/gpu_check.py) checked where there is no GPU: its stand-in mode
passes, needs no Polars, catches a planted 1-bit difference and skips what the budget does
not allow; tests/test_gpu.py collects and runs without Polars."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpurisk.backend import gpu_available

ROOT = Path(__file__).resolve().parent.parent
NO_POLARS = "import sys; sys.modules['polars'] = None\n"  # any import of polars now fails


def device_check(tmp_path, *args, polars=True):
    out = tmp_path / "check"
    code = ("" if polars else NO_POLARS) + (
        "import runpy, sys\n"
        f"sys.argv = ['gpu_check.py', '--out', {str(out)!r}, *{list(args)!r}]\n"
        f"runpy.run_path({str(ROOT / 'bench' / 'gpu_check.py')!r}, run_name='__main__')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    report = json.loads((out / "gpu-check.json").read_text()) if (out / "gpu-check.json").exists() else None
    return run, report, out


def sections(report):
    return {s["name"]: s for s in report["sections"]}


def test_stand_in_check_passes_every_section_without_polars(tmp_path):
    run, report, out = device_check(tmp_path, "--stand-in", polars=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert report["passed"] and report["mode"] == "stand-in"
    by_name = sections(report)
    assert set(by_name) == {"compile", "tiny", "revalue", "chunks", "sort", "monitor", "stress", "flags", "portfolio",
                            "timing"}
    assert by_name["monitor"]["checks"][0]["elements"] > 0
    assert all(s["status"] == "pass" for s in report["sections"]), [(s["name"], s["notes"]) for s in report["sections"]]
    assert len(by_name["revalue"]["checks"]) == 21  # seven venues, three mark sets
    assert by_name["revalue"]["figures"]["account_loop_passes"] > 2
    assert len(by_name["stress"]["checks"]) == 5
    assert all(c["elements"] > 0 for c in by_name["stress"]["checks"])
    assert {r["kernel"] for r in by_name["compile"]["figures"]["kernels"]} >= {"position_risk", "stress_flags"}
    assert by_name["timing"]["figures"]["revalue"] and by_name["timing"]["figures"]["stress_grid"]["seconds"] > 0
    text = (out / "gpu-check.md").read_text()
    assert "ALL CHECKS PASSED" in text and "| position_risk | liquidation.cu |" in text
    assert not list(out.glob(".*.tmp"))  # written atomically: no temporary left behind


def test_the_check_passes_on_the_strict_stand_in_under_cupys_rules(tmp_path):
    """The device check's own code (and the gpu paths it drives) run on arrays that keep
    CuPy's rules (gpurisk/device_arrays.py): what would raise on a card's first run raises here.
    Every section but the compiler's, at the smallest sizes, without Polars."""
    sections_run = ["tiny", "revalue", "chunks", "sort", "monitor", "stress", "flags", "portfolio", "timing"]
    run, report, _ = device_check(tmp_path, "--stand-in", "--strict", "--quick", "--only", *sections_run,
                                  polars=False)
    assert run.returncode == 0, run.stdout + run.stderr
    by_name = sections(report)
    assert set(by_name) == set(sections_run)
    assert all(s["status"] == "pass" for s in report["sections"]), [(s["name"], s["notes"]) for s in report["sections"]]
    assert by_name["timing"]["figures"]["stress_grid"]["bytes_to_device"] > 0


@pytest.mark.parametrize("output", ["position_risk.liq_price", "account_margin.status"])
def test_a_planted_one_bit_difference_is_caught_and_named(tmp_path, output):
    run, report, out = device_check(tmp_path, "--stand-in", "--quick", "--only", "revalue", "chunks",
                                    "--plant", output)
    assert run.returncode == 1, run.stdout + run.stderr
    by_name = sections(report)
    assert by_name["revalue"]["status"] == "FAIL" and by_name["chunks"]["status"] == "pass"
    failed = [m for c in by_name["revalue"]["checks"] for m in c["mismatches"]]
    assert len(failed) == 1 and failed[0].startswith(f"{output}: 1 element(s) differ")
    assert not report["passed"]
    assert f"{output}: 1 element(s) differ" in (out / "gpu-check.md").read_text()


def test_sections_the_budget_cannot_hold_are_skipped_and_said(tmp_path):
    run, report, _ = device_check(tmp_path, "--stand-in", "--quick", "--budget", "4")
    assert run.returncode == 0, run.stdout + run.stderr
    by_name = sections(report)
    assert by_name["sort"]["status"] == "pass"  # needs 2 s: it fits
    for name in ("compile", "revalue", "timing"):
        assert by_name[name]["status"] == "skipped"
        assert "of the budget left" in by_name[name]["notes"][0]


def test_without_a_gpu_the_check_says_to_use_the_stand_in(tmp_path):
    if gpu_available():
        pytest.skip("a GPU is present")
    run, report, _ = device_check(tmp_path)
    assert run.returncode == 2 and report is None
    assert "--stand-in" in run.stderr and "Traceback" not in run.stderr


def test_gpu_tests_collect_and_run_without_polars():
    code = NO_POLARS + "import pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/test_gpu.py']))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "error" not in run.stdout.lower()


def test_the_device_stress_benchmark_runs_without_polars_on_the_strict_stand_in(tmp_path):
    """bench/bench_stress_device.py (issue 12's GPU figure) needs no Polars, runs every policy
    on the strict stand-in's CuPy rules, conserves money, and reports where the time went and
    the copies per scenario run."""
    out = tmp_path / "stress.json"
    code = NO_POLARS + (
        "import runpy, sys\n"
        f"sys.argv = ['bench_stress_device.py', '--backend', 'stand-in-strict', '--positions', '8000', "
        f"'--scenarios', '3', '--grid', '30', '--json', {str(out)!r}]\n"
        f"runpy.run_path({str(ROOT / 'bench' / 'bench_stress_device.py')!r}, run_name='__main__')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["runs"] == 3 * 4 and figures["policies"] == 4
    assert figures["max_conservation_error"] <= 1e-9
    parts = sum(figures[f"{k}_s"] for k in ("kernels", "sorts", "to_device", "to_host", "host"))
    assert abs(parts - figures["seconds"]) <= 5e-3  # each part rounded to the millisecond
    assert 0 < figures["bytes_to_device_per_run"] and 0 < figures["bytes_to_host_per_run"]
    assert figures["grid_s_extrapolated"] == pytest.approx(figures["seconds"] * 10, rel=0.01)
