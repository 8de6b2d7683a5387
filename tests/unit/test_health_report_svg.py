"""The dashboard's charts are drawn once and cropped to their tight box: same size as matplotlib's own
``bbox_inches="tight"`` (which draws every figure twice), nothing cut off."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip extra reports)")

from edge_runtime import health_report

SIZE = re.compile(r'<svg [^>]*?width="([\d.]+)pt" height="([\d.]+)pt" viewBox="([-\d. ]+)"')


def figure(long_label: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 2))
    ax = fig.subplots()
    ax.barh([0, 1], [3, 4])
    ax.set_yticks([0, 1], ["a", long_label])  # sticks out of the figure on the left
    ax.set_title("title")
    ax.set_xlabel("devices")
    return fig


@pytest.mark.parametrize("label", ["short", "a very long group name / a very long model name"])
def test_the_chart_has_the_size_of_matplotlibs_tight_box(label: str) -> None:
    ours = health_report._svg(figure(label))
    buf = io.StringIO()
    figure(label).savefig(buf, format="svg", bbox_inches="tight")
    theirs = SIZE.search(buf.getvalue())
    got = SIZE.match(ours)
    assert got, ours[:300]
    assert theirs
    assert float(got[1]) == pytest.approx(float(theirs[1]), abs=0.01)
    assert float(got[2]) == pytest.approx(float(theirs[2]), abs=0.01)
    x0, _y0, w, h = map(float, got[3].split())
    assert (w, h) == (float(got[1]), float(got[2]))
    if label != "short":
        assert x0 < 0, "the long label left of the figure is inside the view box"
    assert ours.startswith("<svg")
    assert "<metadata>" not in ours
