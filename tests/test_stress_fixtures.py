"""Frozen stress results: today's engine, held to its own past output bit for bit.

The fixtures in ``tests/fixtures/stress/`` were frozen from the NumPy host engine
(``gpurisk.stress._Runner`` on the ``cpu`` backend) on 2026-11-28, by
``python tests/make_stress_fixtures.py``: one ``<case>.npz`` per case holding every array of
``gpurisk.parity.stress_arrays`` (the summary and every liquidation, ADL fill, haircut and price
row), and ``cases.json``, the recipe of each case (book, venue, ladder, policies, steps, impact,
insurance fund, scenarios) plus fingerprints of the rebuilt book and shocks.

What this test holds a change of the stress engine to (e.g. the rewrite of ladder, takeover,
insurance fund, ADL queue merge, haircut policies and price impact as kernels over batches of
scenarios):

* Bit for bit (``gpurisk.parity.compare``) wherever the arithmetic order is unchanged, on the
  ``cpu`` backend, on ``StandInBackend()`` (one thread, the generic queue sort the gpu backend
  runs) and with other screening batches: none of these may change a single bit.
* Where an order changes ON PURPOSE (a tree reduction instead of a running sum, a fused
  multiply-add, ...), switch exactly the fields it touches to a tolerance in ``TOLERANCES``
  below, with the reason written next to each entry. Do not loosen anything else, and do not
  regenerate the fixtures to make a diff go away.
* Regenerate only deliberately, when the engine's results are meant to change (a fixed bug, a
  new rule), and say so in the commit; the generator is byte-reproducible, so regenerating with
  an unchanged engine leaves git with nothing to commit.

If ``test_inputs_are_the_frozen_ones`` fails, the inputs changed (``synthetic_book``,
``Book.from_frames``, a recipe), not the engine: the other failures then say nothing about
the engine.
"""

from __future__ import annotations

import json
import os
import sys
from functools import lru_cache

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import make_stress_fixtures as gen  # noqa: E402

from gpurisk.parity import StandInBackend, StrictStandInBackend, compare, flip_low_bit, stress_arrays  # noqa: E402

DOC = json.loads((gen.FIXTURES / "cases.json").read_text())
CASES = {c["name"]: c for c in DOC["cases"]}
SUMMARY_ONLY = ("summary.", "prices.")  # what detail=False keeps

# Fields compared with a tolerance instead of bit for bit: {"table.column": (rtol, atol, reason)}.
# Empty: every field of every case bit for bit. A tolerance needs the same rows in the same
# order (it compares element by element); write why the arithmetic order changed.
TOLERANCES: dict[str, tuple[float, float, str]] = {
    # Quiet scenarios (screened out: nobody trades) take their conservation error from
    # per-symbol net sizes instead of two passes over every position (issue 12: quiet
    # scenarios cost next to nothing). Both are rounding noise around an exact zero for a
    # balanced book; live rows are unchanged bit for bit.
    "summary.conservation_error": (0.0, 1e-13, "quiet rows from per-symbol totals"),
}

# (backend, screening batch): the results may depend on none of these.
VARIANTS = {  # backend, screening batch, scenario runs at a time
    "cpu-batch64": (lambda: "cpu", 64, 1),  # as frozen
    "cpu-batch1": (lambda: "cpu", 1, 1),
    "cpu-batch3": (lambda: "cpu", 3, 1),
    "cpu-threads2": (lambda: "cpu", 64, 2),
    "cpu-threads3-batch3": (lambda: "cpu", 3, 3),
    "stand-in-batch64": (lambda: StandInBackend(), 64, 1),
    "stand-in-batch1": (lambda: StandInBackend(), 1, 1),
    "stand-in-strict": (lambda: StrictStandInBackend(), 64, 1),  # CuPy's rules on its arrays
}


@lru_cache(maxsize=None)
def book_of(recipe_json: str):
    return gen.build_book(json.loads(recipe_json))


def book_for(case: dict):
    return book_of(json.dumps(case["book_recipe"], sort_keys=True))


@lru_cache(maxsize=None)
def fixture(name: str) -> dict:
    with np.load(gen.FIXTURES / f"{name}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@lru_cache(maxsize=None)
def fresh(name: str):
    """The case run as it was frozen (cpu, batch 64), once per session."""
    case = CASES[name]
    return gen.run_case(case, book_for(case), backend="cpu", batch=case["batch"])


def mismatches(reference: dict, candidate: dict) -> list[str]:
    """Bit-for-bit differences (``compare``), except the fields of TOLERANCES."""
    strict = lambda d: {k: v for k, v in d.items() if k not in TOLERANCES}  # noqa: E731
    out = [str(m) for m in compare(strict(reference), strict(candidate))]
    for name, (rtol, atol, reason) in TOLERANCES.items():
        if name not in reference and name not in candidate:
            continue
        a, b = reference.get(name), candidate.get(name)
        if a is None or b is None or a.dtype != b.dtype or a.shape != b.shape:
            out.append(f"{name}: {None if a is None else (a.dtype, a.shape)} vs "
                       f"{None if b is None else (b.dtype, b.shape)} (tolerance: {reason})")
        elif not np.allclose(b, a, rtol=rtol, atol=atol, equal_nan=True):
            bad = ~np.isclose(b, a, rtol=rtol, atol=atol, equal_nan=True)
            i = int(np.argmax(bad))
            out.append(f"{name}: {int(bad.sum()):,} element(s) beyond rtol={rtol} atol={atol}; first at [{i}]: "
                       f"reference {a.flat[i]!r}, candidate {b.flat[i]!r} (tolerance: {reason})")
    return out


def assert_matches(name: str, candidate: dict, what: str):
    bad = mismatches(fixture(name), candidate)
    assert not bad, f"{name} ({what}) differs from the frozen fixture:\n  " + "\n  ".join(bad)


# ------------------------------------------------------------------ the fixtures themselves


def test_every_case_has_its_fixture_and_nothing_else():
    assert DOC["frozen_on"] == gen.FROZEN_ON
    on_disk = {p.stem for p in gen.FIXTURES.glob("*.npz")}
    assert on_disk == set(CASES), f"missing {set(CASES) - on_disk}, stray {on_disk - set(CASES)}"
    for name, case in CASES.items():
        rows = {t: fixture(name)[f"{t}.scenario"].size for t in case["rows"]}
        assert rows == case["rows"], name


@pytest.mark.parametrize("name", CASES)
def test_inputs_are_the_frozen_ones(name):
    case = CASES[name]
    book = book_for(case)
    ids, shocks = gen.build_scenarios(book, case["scenarios"])
    assert gen.book_fingerprint(book) == case["book_sha256"], (
        f"{name}: the rebuilt book is not the one the fixture was made from (synthetic_book, "
        f"Book.from_frames or the recipe changed): the engine cannot be judged on this case")
    assert gen.fingerprint(ids, shocks) == case["shocks_sha256"], f"{name}: the scenarios are not the frozen ones"
    assert list(book.symbols) == case["symbols"]


def test_a_one_bit_difference_is_caught():
    name = next(iter(CASES))
    candidate = {k: v.copy() for k, v in fixture(name).items()}
    flip_low_bit(candidate["liquidations.price"], 7)
    bad = mismatches(fixture(name), candidate)
    assert len(bad) == 1 and bad[0].startswith("liquidations.price: 1 element(s) differ; first at [7]"), bad


# ------------------------------------------------------------------ today's engine against them


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", CASES)
def test_matches_fixture_bit_for_bit(name, variant):
    make_backend, batch, threads = VARIANTS[variant]
    case = CASES[name]
    if variant == "cpu-batch64":
        records = fresh(name)
    else:
        records = gen.run_case(case, book_for(case), backend=make_backend(), batch=batch, threads=threads)
    assert_matches(name, stress_arrays(records), variant)


@pytest.mark.parametrize("name", CASES)
def test_summary_only_run_matches_the_fixtures_summary_and_prices(name):
    case = CASES[name]
    records = gen.run_case(case, book_for(case), backend="cpu", batch=case["batch"], detail=False)
    arrays = stress_arrays(records)
    kept = {k: v for k, v in fixture(name).items() if k.startswith(SUMMARY_ONLY)}
    bad = mismatches(kept, {k: v for k, v in arrays.items() if k.startswith(SUMMARY_ONLY)})
    assert not bad, f"{name} (detail=False) differs from the frozen fixture:\n  " + "\n  ".join(bad)
    for k, v in arrays.items():
        if not k.startswith(SUMMARY_ONLY):
            assert v.size == 0, f"{k}: detail=False keeps no detail rows"


@pytest.mark.parametrize("name", CASES)
def test_case_exercises_what_it_claims(name):
    case = CASES[name]
    failed = gen.check_expectations(case, book_for(case), fresh(name))
    assert not failed, f"{name} no longer exercises {failed}"


# ------------------------------------------------------------------ the books balance


@pytest.mark.parametrize("name", CASES)
def test_money_is_conserved_and_every_deficit_is_accounted_for(name):
    case = CASES[name]
    s = fresh(name).summary
    for column, values in s.items():
        if values.dtype.kind == "f":
            assert np.isfinite(values).all(), f"{name}: summary.{column} not finite"
    err = s["conservation_error"]
    assert np.all(np.abs(err) <= 1e-9), f"{name}: conservation_error {err}"
    # deficit = insurance_used + socialized_loss holds only to rounding, for every policy: the
    # three totals are summed in different orders (deficit per bankrupt unit, clipped at zero;
    # insurance_used per unit covered, plus per position for what a queue could not meet or a
    # haircut did not recover; socialized_loss per ADL fill or haircut). Measured on these
    # fixtures: at most 6e-16 relative, and exactly 0 in about half the rows. 1e-12 leaves
    # room for another summation order and still catches any lost or double-counted term.
    gap = s["deficit"] - s["insurance_used"] - s["socialized_loss"]
    assert np.all(np.abs(gap) <= 1e-12 * np.maximum(np.abs(s["deficit"]), 1.0)), f"{name}: gap {gap}"
    # These hold exactly, by definition.
    assert np.array_equal(s["unfunded"], np.maximum(0.0, -s["insurance_left"])), name
    assert np.all(s["overshoot"] >= 0) and np.all((s["max_haircut_share"] >= 0) & (s["max_haircut_share"] <= 1))
    quiet = s["steps"] == 0  # nobody liquidated (screened out, or no step liquidated anyone)
    for column in ("deficit", "insurance_used", "socialized_loss", "adl_notional", "notional_liquidated"):
        assert np.all(s[column][quiet] == 0.0), f"{name}: {column} on a quiet row"
    assert np.all(s["insurance_left"][quiet] == case["insurance_fund"]), name


@pytest.mark.parametrize("shallow", [0, 10**12], ids=["every-queue-selected", "every-queue-sorted"])
@pytest.mark.parametrize("name", [n for n in CASES if "queue" in json.dumps(CASES[n]["policy"])])
def test_queue_selection_and_sort_give_the_same_fills(name, shallow, monkeypatch):
    """A queue is ordered by a selection of its front or by one sort with the others, by how
    deep its demand goes; either way the fills are the frozen ones."""
    import importlib

    stress_module = importlib.import_module("gpurisk.stress")
    monkeypatch.setattr(stress_module, "SHALLOW_QUEUE", shallow)
    case = CASES[name]
    records = gen.run_case(case, book_for(case), backend="cpu", batch=case["batch"])
    assert_matches(name, stress_arrays(records), f"SHALLOW_QUEUE={shallow}")
