"""The README's benchmark tables are generated from the saved results (bench/report.py)."""

from __future__ import annotations

from bench import report

RESULT = {
    "benchmark": "demo",
    "records": 1000,
    "R_demo": 0.42,
    "cpu_per_event_a_over_b": 2.5,
    "goals": {"R_demo": {"goal": ">= 0.6", "met": False}},
    "a": {"events_per_s": 1234.5, "cpu_us_per_event": 50.0, "seconds": 1.5, "applied_s": 1.0},
    "exactly_once": {"b": {"events_per_s": 99.0, "cpu_us_per_event": 7.25, "seconds": 2.0}},
    "tables": [{"title": "Latency", "columns": ["rate", "p99 ms"], "rows": [[1000, 12.5]]}],
    "environment": {"date": "2026-11-30", "commit": "abc1234", "machine": {"cpus": 2}},
}


def test_a_result_renders_its_goals_subjects_parameters_and_tables() -> None:
    text = "\n".join(report.render("demo", RESULT))

    assert "| `R_demo` | **0.42** | >= 0.6 | **no** |" in text
    assert "| `cpu_per_event_a_over_b` | 2.5 | - | - |" in text
    assert "| a | 1,234 | 50.0 | 1.5 | 1 |" in text
    assert "| exactly_once / b | 99.0 | 7.25 | 2 | - |" in text
    assert "| 1,000 | 12.5 |" in text
    assert "Run: records 1,000." in text
    assert "commit `abc1234`" in text


def test_the_generated_part_is_replaced_and_the_rest_kept() -> None:
    readme = f"# Title\n\nhand-written\n\n{report.BEGIN}\nold figures\n{report.END}\n\n## After\n"

    new = report.updated(readme)

    assert new.startswith("# Title\n\nhand-written\n\n" + report.BEGIN)
    assert "old figures" not in new
    assert new.endswith(report.END + "\n\n## After\n")
    assert report.updated(new) == new
