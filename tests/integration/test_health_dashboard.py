"""The HTML health dashboard in a real headless browser (Debian's chromium through playwright).

The page of a mixed 500-device fleet with a history of runs and a deploy is opened from a file with every
network request refused: it must load without console errors or page errors, request nothing, and show each
chart as rendered SVG (DOM assertions). A screenshot is kept as a test artifact (its path is printed).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from edge_runtime.audit import append_event
from edge_runtime.health_report import write_reports

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils.health import fleet_health

from tests.support.health_fleet import synthetic_fleet

CHROMIUM = "/usr/bin/chromium"
CHARTS = ("versions", "status", "trend", "latency", "confidence", "drift", "gates")


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dashboard")
    append_event(base, "deploy", "deploy 20261203T055900Z", "deploy FAILED: 3 installed; line_b halted",
                 {"failed": True, "counts": {"installed": 3, "rolled_back": 1, "skipped_halted": 2},
                  "halted": {"line_b": {"wave": 1, "reason": "p95 latency 31 ms > 20 ms"}}})
    for i in range(3):
        plan, snaps = synthetic_fleet(500, seed=10 + i)
        report = fleet_health(plan, snaps, f"20261203T06000{i}Z-0000000{i}")
        report.update(generated_at=f"2026-12-03T06:0{i}:00Z", check_mode=False)
        out = write_reports(base, report)
        assert out["warnings"] == []
    return base / "health-latest.html"


def test_the_dashboard_is_self_contained(dashboard: Path) -> None:
    text = dashboard.read_text()
    assert "<script" not in text
    # nothing loaded from anywhere: no src/href but in-page references (#id); namespaces name, they load nothing
    assert re.findall(r"""(?:src|href)\s*=\s*["'](?!#)""", text) == []
    assert "url(" not in text.replace("url(#", "")
    assert text.count("<figure class='chart'") == len(CHARTS)


def test_the_dashboard_renders_in_chromium_without_errors(dashboard: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium; `make system-deps` installs it as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip extra dev)")
    # the artifact outlives pytest's rotating tmp dirs: .state/test-artifacts/ (git-ignored)
    artifacts = Path(__file__).resolve().parents[2] / ".state" / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "health-dashboard.png"
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def refuse(route: object) -> None:
                url = route.request.url  # type: ignore[attr-defined]
                if not url.startswith("file://"):
                    requests.append(url)
                    route.abort()  # type: ignore[attr-defined]
                else:
                    route.continue_()  # type: ignore[attr-defined]

            page.route("**/*", refuse)
            page.goto(dashboard.as_uri(), wait_until="load")
            assert page.title().startswith("Fleet health 20261203T060002Z")
            for chart in CHARTS:
                svg = page.locator(f"#chart-{chart} svg")
                assert svg.count() == 1, chart
                box = svg.bounding_box()
                assert box is not None
                assert box["width"] > 200, (chart, box)
                assert box["height"] > 100, (chart, box)
                assert page.locator(f"#chart-{chart} svg path").count() >= 5, chart
                assert page.locator(f"#chart-{chart} svg svg").count() == 0, chart  # one svg element per chart
            # data reached the charts: a bar per status, a line per status over the 3 runs, the worst devices' lines
            assert page.locator("#chart-status svg .series rect").count() >= 5
            assert page.locator("#chart-trend svg .series path.line").count() >= 5
            assert page.locator("#chart-latency svg .series path.line").count() >= 3
            # static SVG: no chart says it has no data, and nothing is cut (the legend names whole devices)
            assert page.locator("svg .no_data").count() == 0
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"\nhealth dashboard screenshot: {shot}")
    assert errors == []
    assert requests == []
    assert shot.stat().st_size > 10_000
