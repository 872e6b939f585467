"""The markdown of a run's artifact, from ``RunOutcome.as_dict()``."""

from __future__ import annotations

from typing import Any


def tick_markdown(kind: str, now: str, result: dict[str, Any]) -> str:
    """The artifact body: one section per step, readable without the logs."""
    lines = [f"# {kind} at {now}", ""]
    for step, data in result.items():
        if not isinstance(data, dict):
            continue
        lines.append(f"## {step}")
        if data.get("summary"):
            lines.append(f"**{data['summary']}**")
            lines.append("")
        moves = data.get("moves")
        if moves:
            lines += ["| from | to | leads | examples |", "|---|---|---:|---|"]
            for m in moves:
                lines.append(
                    f"| {m['from']} | {m['to']} | {m['count']} | "
                    f"{', '.join(m.get('examples', []))} |"
                )
            lines.append("")
        templates = data.get("templates")
        if templates:
            lines += ["| template | sent |", "|---|---:|"]
            lines += [f"| {t} | {n} |" for t, n in sorted(templates.items())]
            lines.append("")
        rules = data.get("proposed_rules")
        if rules:  # the learn flow: what `leadflow learn --out` would write
            lines += ["| proposed rule | when | points |", "|---|---|---:|"]
            lines += [f"| {r['id']} | `{r['when']}` | {r['points']} |" for r in rules]
            lines.append("")
        scalars = {
            k: v for k, v in data.items() if isinstance(v, int | float | str) and k != "summary"
        }
        if scalars and not moves and not templates:
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in scalars.items()]
            lines.append("")
    return "\n".join(lines)
