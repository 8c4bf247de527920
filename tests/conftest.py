"""Test-session summary: one hint line for the PostgreSQL tests instead of a line per skip."""

from __future__ import annotations

from typing import Any

PG_URL_VARIABLE = "MOMENTUM_TEST_DATABASE_URL"


def _reason(report: Any) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    postgres = [r for r in skipped if PG_URL_VARIABLE in _reason(r)]
    for report in skipped:
        if report not in postgres:
            terminalreporter.write_line(f"SKIPPED {report.nodeid}: {_reason(report)}")
    if postgres:
        terminalreporter.write_line(
            f"{len(postgres)} PostgreSQL tests skipped: {PG_URL_VARIABLE} is not set. To run "
            f"them: export {PG_URL_VARIABLE}=$(sudo .ci/postgres) (installs and starts a local "
            "server, prints its URL; README, Tests)"
        )
