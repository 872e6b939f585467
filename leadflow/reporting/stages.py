"""How leads move through a pipeline's stages: funnel, conversion, time in stage, aging, stuck.

funnel = leads created in the period by the furthest stage of the main path each reached;
a stage's conversion = reached the next stage / reached this one.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from typing import Any

from leadflow.config.schema import Pipeline
from leadflow.reporting import flow, sales, snapshot
from leadflow.reporting.numbers import ratio, round_days, round_rate
from leadflow.reporting.sqlfn import Distribution


def funnel(p: Pipeline, counts: dict[int, int]) -> dict[str, Any]:
    path = sales.main_path(p)
    reached = [sum(n for k, n in counts.items() if k >= i) for i in range(len(path))]
    cohort = sum(counts.values())
    rows = [
        {
            "stage": s.id,
            "name": s.display_name,
            "kind": s.kind,
            "reached": reached[i],
            "to_next_rate": (
                round_rate(ratio(reached[i + 1], reached[i])) if i + 1 < len(path) else None
            ),
            "of_cohort_rate": round_rate(ratio(reached[i], cohort)),
        }
        for i, s in enumerate(path)
    ]
    return {"cohort": cohort, "stages": rows}


def conversion(p: Pipeline, flows: list[flow.Flow]) -> list[dict[str, Any]]:
    order = {s.id: i for i, s in enumerate(p.stages)}
    lost = {s.id for s in p.stages if s.kind == "lost"}
    progress = [s for s in p.stages if s.kind != "lost"]
    following = {a.id: b.id for a, b in pairwise(progress)}
    tally: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for f in flows:
        if f.pipeline != p.id or f.stage not in order:
            continue
        t = tally[f.stage]
        t["entered"] += f.count
        if not f.moved:
            t["in_stage"] += f.count
        elif f.next_stage is None:
            t["recycled"] += f.count
        elif f.next_stage in lost:
            t["lost"] += f.count
        elif order.get(f.next_stage, -1) > order[f.stage]:
            t["advanced"] += f.count
            if f.next_stage == following.get(f.stage):
                t["to_next"] += f.count
        else:
            t["moved_back"] += f.count
    rows = []
    for s in progress:
        t = tally[s.id]
        entered = t["entered"]
        rows.append(
            {
                "stage": s.id,
                "name": s.display_name,
                "next_stage": following.get(s.id),
                **{
                    k: t[k]
                    for k in (
                        "entered",
                        "to_next",
                        "advanced",
                        "moved_back",
                        "recycled",
                        "lost",
                        "in_stage",
                    )
                },
                "to_next_rate": round_rate(ratio(t["to_next"], entered)),
                "advance_rate": round_rate(ratio(t["advanced"], entered)),
                "drop_off_rate": round_rate(ratio(t["recycled"] + t["lost"], entered)),
            }
        )
    return rows


def time_in_stage(
    p: Pipeline, stays: dict[tuple[str | None, str], Distribution]
) -> list[dict[str, Any]]:
    rows = []
    for s in p.stages:
        if s.kind == "lost":
            continue
        d = stays.get((p.id, s.id))
        rows.append(
            {
                "stage": s.id,
                "name": s.display_name,
                "stays": d.count if d else 0,
                "median_days": round_days(d.median if d else None),
                "p90_days": round_days(d.p90 if d else None),
                "mean_days": round_days(d.mean if d else None),
            }
        )
    return rows


def aging(p: Pipeline, found: dict[tuple[str, str], snapshot.StageAging]) -> list[dict[str, Any]]:
    rows = []
    for s in p.stages:
        if s.kind != "open":
            continue
        a = found.get((p.id, s.id)) or snapshot.StageAging(0, None, None, 0, 0, 0)
        rows.append(
            {
                "stage": s.id,
                "name": s.display_name,
                "sla_days": s.sla.max_days if s.sla else None,
                "leads": a.leads,
                "avg_days": round_days(a.avg_days),
                "max_days": round_days(a.max_days),
                "over_sla": a.over_sla,
                "flagged": a.flagged,
                "stuck": a.stuck,
            }
        )
    return rows


def stuck(p: Pipeline, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {s.id: i for i, s in enumerate(p.stages)}
    mine = [dict(r) for r in found if r["pipeline"] == p.id]
    mine.sort(key=lambda r: order.get(r["stage"], len(order)))  # stable: oldest first
    for r in mine:
        del r["pipeline"]
    return mine
