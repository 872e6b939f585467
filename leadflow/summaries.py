"""Turning batch outcomes into the counts that logs, artifacts and `leadflow run` show."""

from __future__ import annotations

from collections import Counter
from typing import Any


def merge_advance(results: list[dict[str, Any]], batches: int) -> dict[str, Any]:
    moves: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], list[str]] = {}
    total: Counter[str] = Counter()
    for r in results:
        for key in ("examined", "recycled", "flagged", "enrolled", "checkins_scheduled"):
            total[key] += r.get(key, 0)
        for m in r.get("moves", []):
            pair = (m["from"], m["to"])
            moves[pair] += m["count"]
            bucket = examples.setdefault(pair, [])
            bucket.extend(m.get("examples", [])[: 3 - len(bucket)])
    moved = sum(moves.values())
    parts = [f"moved {moved}"] + [f"{a}→{b} {n}" for (a, b), n in sorted(moves.items())]
    if total["flagged"]:
        parts.append(f"flagged stuck {total['flagged']}")
    return {
        "batches": batches,
        **{
            k: total[k]
            for k in ("examined", "recycled", "flagged", "enrolled", "checkins_scheduled")
        },
        "moves": [
            {"from": a, "to": b, "count": n, "examples": examples.get((a, b), [])}
            for (a, b), n in sorted(moves.items())
        ],
        "summary": ", ".join(parts),
    }


def merge_delivery(results: list[dict[str, Any]], batches: int) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    deferred: Counter[str] = Counter()
    cancelled: Counter[str] = Counter()
    templates: Counter[str] = Counter()
    claimed = suppressed = render_failed = 0
    for r in results:
        statuses.update(r.get("statuses", {}))
        deferred.update(r.get("deferred", {}))
        cancelled.update(r.get("cancelled", {}))
        templates.update(r.get("templates", {}))
        claimed += r.get("claimed", 0)
        suppressed += r.get("suppressed", 0)
        render_failed += r.get("render_failed", 0)
    parts = [f"sent {statuses.get('sent', 0)}"]
    parts += [f"deferred {n} ({reason})" for reason, n in sorted(deferred.items())]
    parts += [
        f"{s} {statuses[s]}"
        for s in ("deferred", "bounced", "failed", "unknown")
        if statuses.get(s)
    ]
    if suppressed:
        parts.append(f"suppressed {suppressed}")
    if cancelled:
        parts.append(f"cancelled {sum(cancelled.values())}")
    return {
        "batches": batches,
        "claimed": claimed,
        "sent": statuses.get("sent", 0),
        "statuses": dict(statuses),
        "deferred": dict(deferred),
        "cancelled": dict(cancelled),
        "suppressed": suppressed,
        "render_failed": render_failed,
        "templates": dict(templates),
        "summary": ", ".join(parts),
    }


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
        scalars = {
            k: v for k, v in data.items() if isinstance(v, int | float | str) and k != "summary"
        }
        if scalars and not moves and not templates:
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in scalars.items()]
            lines.append("")
    return "\n".join(lines)


def one_line(result: dict[str, Any]) -> str:
    """``score: ...; advance: moved 3 ...; nurture: sent 120, deferred 14 (send window)``."""
    parts = []
    for step, data in result.items():
        if isinstance(data, dict) and data.get("summary"):
            parts.append(f"{step}: {data['summary']}")
    return "; ".join(parts) or "nothing to do"
