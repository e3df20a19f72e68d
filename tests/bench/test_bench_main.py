"""python -m bench: the summary table and the report it writes, from known sections."""

from __future__ import annotations

import pytest

from bench.__main__ import main, render_doc, summary_rows, with_plots
from bench.report import Headline, Section, md_table, update_section


def test_summary_rows_show_baseline_ratio_and_verdict():
    rows = summary_rows([
        Headline("push p99", "30.0 ms", "bare aiohttp 10.0 ms", 3.0, "< 20 ms", False),
        Headline("intakes", "5,000/s"),
    ])
    assert rows[1] == ["push p99", "30.0 ms", "bare aiohttp 10.0 ms", "×3.00", "< 20 ms",
                       "**no**"]
    assert rows[2] == ["intakes", "5,000/s", "—", "—", "—", "—"]


def test_report_has_machine_summary_sections_and_plot_links(tmp_path):
    plot = tmp_path / "night.png"
    secs = [Section("Server", "a table", [Headline("x", "1 ms", target="< 2 ms", met=True)]),
            Section("Bad night", "body", [], [plot])]
    doc = render_doc(secs, quick=False, took_s=600, speed_s=1.5)
    assert doc.startswith("# Performance\n")
    assert "**Python yardstick:** 1.50 s" in doc and "cores (" in doc
    summary = doc.index("## Summary")
    assert summary < doc.index("## Server\n\na table") < doc.index("## Bad night")
    assert "| x | 1 ms | — | — | < 2 ms | yes |" in doc
    assert "![Bad night: night](perf/night.png)" in doc
    # a plot the body links itself is not linked twice
    linked = Section("S", "see ![p](perf/night.png)", [], [plot])
    assert with_plots(linked).count("night.png") == 1


def test_update_section_replaces_only_its_own(tmp_path):
    doc = tmp_path / "p.md"
    doc.write_text("# Performance\n\n## A\n\nold a\n\n## B\n\nold b\n", encoding="utf-8")
    update_section(doc, "A", "new a")
    text = doc.read_text(encoding="utf-8")
    assert "new a" in text and "old a" not in text and "old b" in text


def test_md_table():
    assert md_table([["a", "b"], ["1", "2"]]) == "| a | b |\n| --- | --- |\n| 1 | 2 |"


def test_unknown_module_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--only", "nothing"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_history_keeps_earlier_rows_and_adds_full_runs_only():
    from bench.__main__ import history

    old = ("# Performance\n\n## Earlier runs\n\nintro\n\n| date | x |\n| --- | --- |\n"
           "| 2026-11-27 | a |\n\n## Other\n")
    heads = [Headline("core: intakes applied in process", "10,000/s")]
    full = history(old, heads, 0.7, 900, quick=False)
    rows = [r for r in full.splitlines() if r.startswith("| 20")]
    assert rows[0] == "| 2026-11-27 | a |"
    assert len(rows) == 2 and "| 0.70 s | 10,000/s | — |" in rows[1] and "15.0 min" in rows[1]
    quick = history(old, heads, 0.7, 100, quick=True)
    assert len([r for r in quick.splitlines() if r.startswith("| 20")]) == 1


def test_plots_are_not_written_when_the_report_is_not(tmp_path, monkeypatch):
    from bench import report

    monkeypatch.setattr(report, "PLOT_DIR", tmp_path)
    monkeypatch.setattr(report, "WRITE_PLOTS", False)
    path = report.plot_lines("p", "t", "x", "y", {"a": [(1, 2), (2, 3)]})
    assert path == tmp_path / "p.png" and not path.exists()
    monkeypatch.setattr(report, "WRITE_PLOTS", True)
    assert report.plot_lines("p", "t", "x", "y", {"a": [(1, 2), (2, 3)]}).stat().st_size > 0


def test_hand_written_sections_are_kept_when_the_report_is_rewritten(tmp_path, monkeypatch):
    import bench.__main__ as bm

    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n## Server\n\nold figures\n\n## Changes, measured\n\n"
                   "before / after, by hand\n\n| a | b |\n\n## Earlier runs\n\n", "utf-8")
    monkeypatch.setattr(bm, "PERF_DOC", doc)
    new = render_doc([Section("Server", "new figures")], quick=False, took_s=60, speed_s=1)
    assert "old figures" not in new and "new figures" in new
    kept = new.index("## Changes, measured\n\nbefore / after, by hand\n\n| a | b |\n")
    assert new.index("## Server") < kept < new.index("## Earlier runs")
    doc.write_text("# Performance\n", "utf-8")  # nothing to keep: no empty heading
    assert "Changes, measured" not in render_doc([], quick=True, took_s=1, speed_s=1)
