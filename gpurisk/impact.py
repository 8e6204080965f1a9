"""Price impact of liquidation flow: how far what is sold into the market moves each
symbol's mark in a cascade step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .book import Book


@dataclass(frozen=True)
class Impact:
    """Price impact of liquidation flow, per symbol: the mark moves by
    −sign(flow)·coefficient·(|flow notional| / depth) (``linear``) or its square root
    (``sqrt``). ``depth`` is the notional per symbol ({symbol: notional}) or one number for
    all; None takes ``depth_share`` of each symbol's open interest notional. For an inverse
    market, notionals (flow and depth) are in its coin, |q|·cs/P."""

    model: str = "sqrt"
    coefficient: float = 0.1
    depth: "float | dict | None" = None
    depth_share: float = 0.1

    def __post_init__(self):
        if self.model not in ("linear", "sqrt"):
            raise ValueError(f"Impact.model must be 'linear' or 'sqrt', got {self.model!r}")
        for name in ("coefficient", "depth_share"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not (math.isfinite(v) and v > 0):
                raise ValueError(f"Impact.{name} must be finite and > 0, got {v!r}")
        if self.depth is None:
            return
        given = self.depth.items() if isinstance(self.depth, dict) else [(None, self.depth)]
        bad = []
        for sym, d in given:
            try:
                ok = not isinstance(d, bool) and math.isfinite(float(d)) and float(d) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok or (isinstance(self.depth, dict) and not isinstance(sym, str)):
                bad.append(f"{sym}={d!r}" if sym is not None else repr(d))
        if bad:
            raise ValueError(f"Impact.depth must be a notional, finite and > 0 (one number, or {{symbol: "
                             f"notional}}); got {', '.join(bad[:5])}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))

    def depths(self, book: Book) -> np.ndarray:
        """Depth notional per symbol of ``book``. Symbols a depth dict leaves out get no impact
        (infinite depth); a symbol the book does not have is refused (ValueError)."""
        if self.depth is None:
            oi = np.bincount(book.pos_symbol, weights=np.abs(book.size), minlength=book.n_symbols) / 2
            out = oi * book.mark_price * book.contract_size * self.depth_share
            if book.inverse.any():  # an inverse market's notional, flow and depth are in its coin
                out = np.where(book.inverse == 1, oi * book.contract_size / book.mark_price * self.depth_share, out)
        elif isinstance(self.depth, dict):
            unknown = sorted(str(s) for s in self.depth if s not in book.symbols)
            if unknown:
                raise ValueError(f"Impact.depth names symbol(s) the book does not have: {', '.join(map(repr, unknown[:5]))}"
                                 f"; the book has {', '.join(book.symbols)}")
            out = np.array([float(self.depth.get(s, np.nan)) for s in book.symbols])
        else:
            out = np.full(book.n_symbols, float(self.depth))
        return np.where(out > 0, out, np.inf)

    def move(self, flow_notional: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Relative mark move for a signed flow (positive = sold into the market)."""
        x = np.abs(flow_notional) / depth
        m = self.coefficient * (x if self.model == "linear" else np.sqrt(x))
        return -np.sign(flow_notional) * np.minimum(m, 0.99)


def get_impact(impact) -> Impact | None:
    if impact is None or isinstance(impact, Impact):
        return impact
    if isinstance(impact, str):
        return Impact(model=impact)
    if isinstance(impact, dict):
        return Impact(**impact)
    raise TypeError("impact must be None, 'linear', 'sqrt', a dict of Impact fields or an Impact")
