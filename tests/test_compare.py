"""The comparison table: every method a row, k-NN per class group only for long-tailed runs."""

from __future__ import annotations

from train.compare import results_table

UNIQUE = {"0.025": 1.0, "0.1": 0.5, "0.25": 0.25, "0.5": 0.125}


def final(knn: float, **extra: object) -> dict:
    return {"unique": UNIQUE, "perplexity": 0.5, "dead": 0.1, "knn_top1": knn, **extra}


def test_balanced_table_has_one_row_per_method_and_no_group_columns() -> None:
    lines = results_table({"carp": final(0.8, linear_top1=0.85), "carp_dec": final(0.75)}).splitlines()
    assert len(lines) == 4 and "k-NN head" not in lines[0]
    assert lines[2] == "| carp | 1.000 | 0.500 | 0.250 | 0.125 | 0.500 | 0.100 | 0.8000 | 0.8500 |"
    assert lines[3].endswith("| 0.7500 | nan |")  # no probe: nan, not a missing cell


def test_long_tailed_table_adds_head_medium_tail_columns() -> None:
    groups = {"head": 0.9, "medium": 0.8, "tail": 0.5}
    lines = results_table({"carp_dec": final(0.8, knn_groups=groups)}).splitlines()
    assert "| k-NN top-1 | k-NN head | k-NN medium | k-NN tail | linear top-1 |" in lines[0]
    assert lines[1].count("---") == lines[0].count("|") - 1
    assert "| 0.8000 | 0.9000 | 0.8000 | 0.5000 | nan |" in lines[2]
