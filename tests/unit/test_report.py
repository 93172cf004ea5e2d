"""report.py's pure parts; the whole report runs end to end in test_experiments.py."""

from __future__ import annotations

from movielens_pipeline.report import slug, sorted_table


def test_report_sorts_table_rows_and_keeps_the_header():
    table = "| Path | Metric |\n|---|---|\n| z | b |\n| a | c |\n"
    assert sorted_table(table) == "| Path | Metric |\n|---|---|\n| a | c |\n| z | b |"
    assert sorted_table("") == ""
    assert slug("Test RMSE by user activity (training ratings per user)") == (
        "test-rmse-by-user-activity-training-ratings-per-user"
    )
