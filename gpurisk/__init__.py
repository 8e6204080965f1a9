"""gpurisk: batch risk engine for crypto perpetual-futures venues.

Margin, liquidation and bankruptcy prices and ADL queues for every account and position at
once, from one set of CUDA kernels run on the GPU (CuPy) or compiled for the CPU.

Names are imported on first use, so the array core (engine, kernels, synthetic books) works
where Polars is not installed (e.g. a bare GPU node); tables and file I/O need Polars.
"""

import importlib
import sys
import types

__version__ = "0.1.0"

_EXPORTS = {
    "Book": "book", "BookError": "book", "Problem": "book", "read_book": "book",
    "synthetic_book": "synthetic", "synthetic_tables": "synthetic",
    "Engine": "engine", "Risk": "risk", "revalue": "engine",
    "Venue": "venue", "PRESETS": "venue", "get_venue": "venue", "BINANCE": "venue", "BYBIT": "venue",
    "BITMEX": "venue", "HYPERLIQUID": "venue", "DYDX": "venue", "OKX": "venue", "GATE": "venue",
    "VARIANTS": "venue", "BYBIT_UTA": "venue", "BINANCE_MULTI_ASSETS": "venue",
    "get_backend": "backend", "gpu_available": "backend", "BackendUnavailable": "backend",
    "KernelBuildError": "kernels",
    "stress": "stress", "shock_grid": "scenarios", "read_scenarios": "scenarios", "Impact": "impact",
    "StressResult": "stress_result", "Ladder": "ladder", "LADDERS": "ladder", "write_report": "report",
    "read_sharded_book": "distributed", "write_sharded": "distributed",
    "revalue_distributed": "distributed", "stress_distributed": "distributed",
    "DistributedEngine": "distributed",
    "DistributedRunError": "distributed",
    "apply_funding": "funding", "FundingResult": "funding",
    "PortfolioModel": "portfolio",
}

__all__ = sorted(_EXPORTS)


class _Package(types.ModuleType):
    """The package module. Importing a submodule binds it to the package attribute of the
    same name (``import gpurisk.stress`` sets ``gpurisk.stress`` to the module), which would
    shadow an export of that name (the ``stress`` function) whatever was imported first. An
    exported name keeps the exported object; the submodules stay importable by path
    (``from gpurisk.stress import run_stress``, ``importlib.import_module("gpurisk.stress")``)."""

    def __setattr__(self, name, value):
        if (name in _EXPORTS and isinstance(value, types.ModuleType)
                and value.__name__ == f"{__name__}.{_EXPORTS[name]}" and hasattr(value, name)):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gpurisk' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
