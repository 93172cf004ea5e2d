"""report.py's pure parts; the whole report runs end to end in test_experiments.py."""

from __future__ import annotations

from movielens_pipeline.report import metrics_table, slug, sorted_table


def test_report_sorts_table_rows_and_keeps_the_header():
    table = "| Path | Metric |\n|---|---|\n| z | b |\n| a | c |\n"
    assert sorted_table(table) == "| Path | Metric |\n|---|---|\n| a | c |\n| z | b |"
    assert sorted_table("") == ""
    assert slug("Test RMSE by user activity (training ratings per user)") == (
        "test-rmse-by-user-activity-training-ratings-per-user"
    )


def test_report_leads_the_metrics_with_the_test_metrics():
    table = "\n".join(
        [
            "| Path | Metric | HEAD | workspace | Change |",
            "|---|---|---|---|---|",
            "| dvclive/train/val.json | val.rmse | 0.89 | 0.90 | 0.01 |",
            "| eval/metrics.json | baseline.rmse | 1.12 | 1.13 | 0.01 |",
            "| eval/metrics.json | test.rmse | 0.91 | 0.92 | 0.01 |",
            "| eval/metrics.json | popularity.ndcg@10 | 0.12 | 0.13 | 0.01 |",
            "| eval/metrics.json | test.mae | 0.72 | 0.73 | 0.01 |",
        ]
    )
    metrics = [line.split("|")[2].strip() for line in metrics_table(table).splitlines()[2:]]
    assert metrics == ["test.mae", "test.rmse", "baseline.rmse", "popularity.ndcg@10", "val.rmse"]
    assert metrics_table(table).splitlines()[:2] == table.splitlines()[:2]
    assert metrics_table("") == ""
