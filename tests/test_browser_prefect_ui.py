"""The Prefect UI in a real browser: a flow run's page shows what the run logged and published.

A real ``prefect server start`` (``prefect_ui``, one per session: tests/browser.py) and the
report flow run against it as an operator runs it (``leadflow run report`` with
PREFECT_API_URL, a subprocess) over test_report's seeded database; then the run's page in
headless chromium: the summary line the run logged at INFO on the Logs tab, and every artifact
the server holds for the run (report-summary, report-html, the tables) on the Artifacts tab.
Screenshots of both tabs are kept in ``var/test-artifacts/browser/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import TEMPLATES
from test_report import UNTIL, seeded_folder

if TYPE_CHECKING:
    from browser import Chromium

pytest_plugins = ["browser"]  # the session's chromium and Prefect UI server

pytestmark = [
    pytest.mark.flow,
    pytest.mark.slow,
    # What the UI shows does not depend on the database: the PostgreSQL pass of `make test`
    # would spend ~90 s on a second Prefect server to see the same page.
    pytest.mark.skipif(
        bool(os.environ.get("LEADFLOW_TEST_DATABASE_URL")),
        reason="the Prefect UI is checked once, in the SQLite pass",
    ),
]

LEADFLOW = Path(sys.executable).parent / "leadflow"
TALL = (1280, 1600)  # the UI scrolls inside a box of its own: a tall window shows more of it


def _api(base: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{base}/api{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _run_report_flow(base: str, folder: Path) -> tuple[str, str]:
    """``leadflow run report`` against the UI's server over a seeded database: the id of its
    flow run and the summary line it printed (the one it logged)."""
    url, config = seeded_folder(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LEADFLOW_"))}
    env.update(
        PREFECT_API_URL=f"{base}/api",
        PREFECT_HOME=str(folder / "prefect-client"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        LEADFLOW_HOME=str(folder),
        LEADFLOW_DATABASE_URL=url,
        LEADFLOW_CONFIG=str(config),
        LEADFLOW_TEMPLATES=str(TEMPLATES),
        LEADFLOW_DEMO="true",
    )
    now = UNTIL.isoformat()
    done = subprocess.run(
        [str(LEADFLOW), "run", "report", "--now", now],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"report at {now}: "), line
    runs = _api(base, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [f"report @ {now}"]}}})
    assert len(runs) == 1, runs
    assert runs[0]["state_type"] == "COMPLETED"
    return runs[0]["id"], line


def test_a_flow_runs_page_shows_its_summary_log_line_and_its_report_artifacts(
    chromium: Chromium, prefect_ui: str, screenshot: Any, tmp_path: Path
) -> None:
    run_id, summary = _run_report_flow(prefect_ui, tmp_path)
    artifacts = _api(
        prefect_ui, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    )
    keys = sorted(a["key"] for a in artifacts)
    assert {"report-summary", "report-html"} <= set(keys), keys
    assert any(k.startswith("report-funnel") for k in keys), keys

    def look(page: Any) -> tuple[str, list[str]]:
        row = page.locator(".log-row", has_text=summary)  # a line of the Logs tab (the first)
        row.wait_for()
        row.scroll_into_view_if_needed()  # the UI scrolls inside its own box: not full_page
        screenshot(page, "logs")
        line = str(row.inner_text())
        page.get_by_role("tablist").get_by_text("Artifacts", exact=True).click()
        for key in keys:
            page.get_by_text(key, exact=True).wait_for()
        page.get_by_text(keys[0], exact=True).scroll_into_view_if_needed()
        screenshot(page, "artifacts")
        return line, [key for key in keys if page.get_by_text(key, exact=True).count() == 1]

    row, shown = chromium.open(f"{prefect_ui}/runs/flow-run/{run_id}", look, viewport=TALL)
    assert summary in row
    assert "info" in row.lower().split(summary.lower())[0]  # its level label, before it
    assert shown == keys
