"""Server-side SVG charts: scales, escaping, gaps, and bars that match their values."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from rekindle.charts import Series, bar_chart, format_number, hbar_chart, line_chart, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314  (our own output)


def test_it_picks_round_ticks_that_cover_the_maximum() -> None:
    assert nice_ticks(0) == [0.0, 1.0]
    assert nice_ticks(7) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert nice_ticks(100) == [0.0, 50.0, 100.0]
    assert nice_ticks(101) == [0.0, 50.0, 100.0, 150.0]
    assert nice_ticks(0.37) == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_it_formats_numbers_for_axes_and_tooltips() -> None:
    assert format_number(3) == "3"
    assert format_number(12345) == "12,345"
    assert format_number(2.34, "s") == "2.3 s"
    assert format_number(12.5, "%") == "12.5%"


def test_it_stacks_bars_in_proportion_to_their_values() -> None:
    svg = bar_chart(
        ["d1", "d2"], [Series("ok", [2, 4], "#0f0"), Series("failed", [2, 0], "#f00")], title="Runs", stacked=True
    )
    root = _parse(svg)
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    heights = {r.find(f"{SVG}title").text: float(r.get("height", "0")) for r in bars}  # type: ignore[union-attr]
    # Zero-valued segments are not drawn; the rest scale linearly.
    assert set(heights) == {"d1 · ok: 2", "d1 · failed: 2", "d2 · ok: 4"}
    assert math.isclose(heights["d2 · ok: 4"], 2 * heights["d1 · ok: 2"], rel_tol=1e-3)
    assert root.get("aria-label") == "Runs"


def test_it_escapes_labels_and_series_names() -> None:
    evil = '<script>alert("x")</script>'
    for svg in (
        bar_chart([evil], [Series(evil, [1])], title=evil),
        line_chart([evil, "b"], [Series(evil, [1, 2])], title=evil),
        hbar_chart([evil], [Series(evil, [1])], title=evil),
    ):
        assert "<script>" not in svg
        assert "&lt;script&gt;" in svg
        _parse(svg)  # still well-formed XML


def test_it_leaves_a_gap_in_a_line_where_there_is_no_data() -> None:
    svg = line_chart(["a", "b", "c", "d"], [Series("rate", [1.0, 2.0, math.nan, 3.0])], title="Rate")
    root = _parse(svg)
    polylines = list(root.iter(f"{SVG}polyline"))
    # a-b is one segment; d alone is a point with no line; the nan day has no point.
    assert len(polylines) == 1
    assert len(re.findall(r",", polylines[0].get("points", ""))) == 2
    assert len(list(root.iter(f"{SVG}circle"))) == 3


def test_it_draws_one_horizontal_bar_per_label_and_series() -> None:
    svg = hbar_chart(["restore", "animate"], [Series("median", [2, 8]), Series("p95", [4, 16])], title="Durations")
    root = _parse(svg)
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(bars) == 4
    widths = [float(b.get("width", "0")) for b in bars]
    assert math.isclose(widths[3], 2 * widths[2], rel_tol=1e-3)
