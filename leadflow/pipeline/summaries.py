"""The markdown of a run's artifact, from ``RunOutcome.as_dict()``: what a person reading the
Prefect UI needs — per step that did something its summary line and tables (moves, emails
per template, deferrals, errors) and the counts the summary does not say, when not zero;
the steps with nothing to do on one line. Internal figures (batches, claims, reconciliation
counters) stay in the flow's result and in leadflow's run record."""

from __future__ import annotations

from typing import Any

from leadflow.reporting.markdown import escape

# Figures a person does not need in the artifact: how the work was cut up and bookkeeping.
INTERNAL = frozenset(
    {"batches", "claimed", "examined", "config_hash", "leads_made_due", "unknown_reconciled"}
)
# Counts a step's summary line does not already say, shown when not zero, with their label.
_MOVES = {"enrolled": "leads enrolled in a cadence", "checkins_scheduled": "check-ins scheduled"}
_SENDS = {"render_failed": "emails that could not be rendered"}
EXTRA: dict[str, dict[str, str]] = {
    "intake": {"unchanged": "rows unchanged", "suppressed": "addresses suppressed"},
    "mailbox": {"recorded": "messages recorded"},
    "callbacks": _MOVES,
    "advance": _MOVES,
    "nurture": _SENDS,
    "checkins": _SENDS,
}
# Steps whose section is written whatever their counts (they report rather than count).
ALWAYS = frozenset({"learn", "report"})


def tick_markdown(kind: str, now: str, result: dict[str, Any]) -> str:
    """The artifact body: one section per step that did something, readable without logs."""
    lines = [f"# {kind} at {now}", ""]
    idle = []
    for step, data in result.items():
        if not isinstance(data, dict):
            continue
        if step not in ALWAYS and not _did_something(data):
            if step != "config":  # the config check, not work: said only when it changed things
                idle.append(step)
            continue
        lines += [f"## {step}", ""]
        if data.get("summary"):
            lines += [f"**{escape(str(data['summary']))}**", ""]
        lines += _tables(data)
        figures = {label: data[k] for k, label in EXTRA.get(step, {}).items() if data.get(k)}
        if figures:
            lines += ["| also | count |", "|---|---:|"]
            lines += [f"| {label} | {n} |" for label, n in figures.items()]
            lines.append("")
    if idle:
        lines += [f"Nothing to do: {', '.join(idle)}.", ""]
    return "\n".join(lines)


def _did_something(data: dict[str, Any]) -> bool:
    return any(_nonzero(v) for k, v in data.items() if k not in INTERNAL and k != "summary")


def _nonzero(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_nonzero(v) for k, v in value.items() if k not in INTERNAL)
    if isinstance(value, list):
        return bool(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value != 0


def _tables(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    moves = data.get("moves") or []
    if moves:
        lines += ["| from | to | leads | examples |", "|---|---|---:|---|"]
        for m in moves:
            examples = ", ".join(escape(e) for e in m.get("examples", []))
            lines.append(f"| {escape(m['from'])} | {escape(m['to'])} | {m['count']} | {examples} |")
        lines.append("")
    for key, header in (
        ("templates", "template | sent"),
        ("deferred", "deferred because | emails"),
        ("cancelled", "cancelled because | emails"),
        ("kinds", "message | count"),
    ):
        counts = {k: n for k, n in (data.get(key) or {}).items() if n}
        if counts:
            lines += [f"| {header} |", "|---|---:|"]
            lines += [f"| {escape(str(k))} | {n} |" for k, n in sorted(counts.items())]
            lines.append("")
    statuses = {s: n for s, n in (data.get("statuses") or {}).items() if n and s != "sent"}
    if statuses:
        lines += ["| other outcome | emails |", "|---|---:|"]
        lines += [f"| {escape(s)} | {n} |" for s, n in sorted(statuses.items())]
        lines.append("")
    rules = data.get("proposed_rules")
    if rules:  # the learn flow: what `leadflow learn --out` would write
        lines += ["| proposed rule | when | points |", "|---|---|---:|"]
        lines += [f"| {r['id']} | `{r['when']}` | {r['points']} |" for r in rules]
        lines.append("")
    errors = data.get("errors") or []
    if errors:
        lines += ["Errors:", ""] + [f"- {escape(str(e))}" for e in errors] + [""]
    return lines
