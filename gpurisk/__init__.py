"""gpurisk: batch risk engine for crypto perpetual-futures venues.

Margin, liquidation and bankruptcy prices and ADL queues for every account and position at
once, from one set of CUDA kernels run on the GPU (CuPy) or compiled for the CPU.
"""

from .backend import BackendUnavailable, get_backend, gpu_available
from .book import Book, BookError, Problem, read_book
from .engine import Engine, Risk, revalue
from .kernels import KernelBuildError
from .synthetic import synthetic_book
from .venue import BINANCE, BITMEX, BYBIT, DYDX, HYPERLIQUID, PRESETS, Venue, get_venue

__version__ = "0.1.0"

__all__ = [
    "Book", "BookError", "Problem", "read_book", "synthetic_book",
    "Engine", "Risk", "revalue", "Venue", "PRESETS", "get_venue",
    "BINANCE", "BYBIT", "BITMEX", "HYPERLIQUID", "DYDX",
    "get_backend", "gpu_available", "BackendUnavailable", "KernelBuildError",
]
