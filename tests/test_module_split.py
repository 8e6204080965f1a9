"""gpurisk.report, gpurisk.distributed, gpurisk.cli, gpurisk.book, gpurisk.engine, gpurisk.deleverage,
gpurisk.stress and gpurisk.book_updates were each split into modules named for
their concepts; every name they had stays importable from them, as the very object of the
module that now holds it (not a copy)."""

import importlib

import pytest

MOVED = {
    "report": {
        "report_tables": ["STATUSES", "STRESS_TABLES", "RiskTables", "StressTables", "load_risk_tables",
                          "load_stress_tables", "select_asset", "stress_assets", "write_base_marks", "fmt",
                          "headline", "format_headline"],
        "report_figures": ["DPI", "LIGHT_COLOURS", "MAX_PORTFOLIO_POINTS", "MAX_QUEUE_POINTS", "POLICY_COLOURS",
                           "STATUS_COLOURS", "STATUS_LABELS", "SYMBOL_COLOURS", "fig_adl_queue", "fig_cascade",
                           "fig_margin_ratio", "fig_portfolio_vs_tiered", "fig_stress_curve", "portfolio_rows"],
    },
    "distributed": {
        "distributed_stress": ["stress_distributed"],
        "distributed_cluster": ["DistributedRunError", "connect"],
        "shards": ["FORMAT", "MANIFEST", "SHARDS_DIR", "is_sharded", "read_shard", "read_sharded_book",
                   "shard_bounds", "shard_name", "shard_paths", "slice_book", "split_book", "write_sharded"],
    },
    "cli": {
        "cli_common": ["InputError", "SYNTH_BYTES_PER_ACCOUNT"],
        "cli_revalue": ["cmd_demo", "cmd_synth", "cmd_revalue"],
        "cli_stress": ["cmd_stress"],
        "cli_report": ["cmd_report", "format_report_line"],
    },
    "deleverage": {
        "queue_front": ["queue_front", "queue_front_numpy", "queue_fronts", "queue_fronts_to_demand",
                        "demand_by_queue", "rotated_queue"],
    },
    "stress": {
        "stress_context": ["StressContext", "Revaluation"],
    },
    "engine": {
        "marks": ["check_marks", "resolve_marks"],
        "risk": ["Risk", "status_summary"],
    },
    "book": {
        "validate": ["EXAMPLES_SHOWN", "Problem", "BookError"],
        "tier_rules": ["derived_maint_amount"],
    },
    "book_updates": {
        "update_checks": ["UpdateError", "describe", "check_update_fields", "rows_pass", "problems_of"],
    },
}
KEPT = {
    "report": ["CSS", "table_html", "write_report"],
    "distributed": ["DistributedEngine", "DistributedRisk", "revalue_distributed"],
    "cli": ["DESCRIPTION", "EXIT_OK", "EXIT_INPUT", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "build_parser", "main"],
    "book": ["Book", "read_book", "read_table"],
    "deleverage": ["queue_fills", "queue_merges", "settle_queues", "take_over_bankrupt", "water_fill", "haircuts",
                   "haircut_adl", "fund_cover", "queue_adl"],
    "stress": ["stress", "run_stress", "run_scenario", "conservation_check"],
    "engine": ["DeviceBook", "Engine", "revalue", "padded_tiers", "liquidation_root_bounds", "auto_chunk_positions"],
    "book_updates": ["LiveBook", "Applied", "UPDATE_TYPES", "DUST", "LOOKUPS_KEPT", "writable", "writable_copy"],
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_moved_names_are_reexported_from_the_old_module(old):
    module = importlib.import_module(f"gpurisk.{old}")
    for new, names in MOVED[old].items():
        home = importlib.import_module(f"gpurisk.{new}")
        for name in names:
            assert getattr(module, name) is getattr(home, name), f"gpurisk.{old}.{name}"


@pytest.mark.parametrize("old", sorted(KEPT))
def test_kept_names_are_defined_in_the_old_module(old):
    module = importlib.import_module(f"gpurisk.{old}")
    for name in KEPT[old]:
        value = getattr(module, name)
        assert getattr(value, "__module__", module.__name__) == module.__name__, f"gpurisk.{old}.{name}"
