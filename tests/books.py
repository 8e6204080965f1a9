"""Small hand-built books for tests."""

import polars as pl


def tiny_frames():
    """Two symbols, three accounts, cross and isolated positions; valid."""
    return {
        "markets": pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"], "mark_price": [60_000.0, 3_000.0]}),
        "tiers": pl.DataFrame({
            "symbol": ["BTCUSDT", "BTCUSDT", "ETHUSDT"],
            "notional_floor": [0.0, 50_000.0, 0.0],
            "maint_margin_rate": [0.004, 0.005, 0.005],
            "max_leverage": [125.0, 100.0, 100.0],
        }),
        "accounts": pl.DataFrame({"account_id": [1, 2, 3], "wallet_balance": [10_000.0, 2_000.0, 500.0]}),
        "positions": pl.DataFrame({
            "account_id": [1, 1, 2, 3],
            "symbol": ["BTCUSDT", "ETHUSDT", "BTCUSDT", "ETHUSDT"],
            "size": [0.5, -3.0, -0.1, 2.0],
            "entry_price": [58_000.0, 3_100.0, 61_000.0, 2_900.0],
            "margin_mode": ["cross", "cross", "cross", "isolated"],
            "isolated_margin": [0.0, 0.0, 0.0, 300.0],
        }),
    }
