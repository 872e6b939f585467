"""Open leads in stages the config no longer has, and ``moved_stages``: where they go.

Deleting a stage from pipeline.yaml would otherwise leave its leads where no rule, cadence
or report reaches them (the open value silently drops). ``validate`` and ``plan`` name such
leads; a pipeline's ``moved_stages: {removed: stage}`` moves them, as audited moves made by
the first run under the new config (``engine.apply_config_change``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, inspect, select
from sqlalchemy.engine import make_url

from leadflow.config.loaded import LoadedConfig
from leadflow.config.source import Issue
from leadflow.pipeline.moves import AdvanceOutcome, MoveWriter, load_rows
from leadflow.runtime import Runtime
from models.db import DatabaseUnavailable, open_database
from models.tables import LEADS, LeadStatus

EXAMPLES = 3
MOVE_CHUNK = 2_000


@dataclass(frozen=True)
class StrandedStage:
    """Open leads of one (pipeline, stage) pair the config does not define."""

    pipeline: str
    stage: str
    leads: int
    examples: tuple[str, ...]
    to: str | None  # from moved_stages; None: nothing says where they go

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "stage": self.stage,
            "leads": self.leads,
            "examples": list(self.examples),
            "to": self.to,
        }

    def describe(self) -> str:
        where = f"stage '{self.stage}' of pipeline '{self.pipeline}'"
        if self.pipeline_removed:
            where = f"pipeline '{self.pipeline}'"
        examples = ", ".join(self.examples)
        return (
            f"{self.leads} open lead(s) in {where}, which the config no longer has "
            f"(e.g. {examples})"
        )

    @property
    def pipeline_removed(self) -> bool:
        return self.stage == ""


def find(conn: Connection, loaded: LoadedConfig) -> list[StrandedStage]:
    """Every stranded (pipeline, stage) with its count: one GROUP BY over the open leads."""
    lead = LEADS
    groups = conn.execute(
        select(lead.c.pipeline, lead.c.stage, func.count())
        .where(lead.c.status == LeadStatus.ACTIVE, lead.c.stage.is_not(None))
        .group_by(lead.c.pipeline, lead.c.stage)
        .order_by(lead.c.pipeline, lead.c.stage)
    ).all()
    out = []
    for pipeline_id, stage_id, count in groups:
        if loaded.stage(pipeline_id or "", stage_id) is not None:
            continue
        pipeline = loaded.config.pipeline(pipeline_id or "")
        examples = conn.execute(
            select(lead.c.email)
            .where(
                lead.c.status == LeadStatus.ACTIVE,
                lead.c.pipeline == pipeline_id,
                lead.c.stage == stage_id,
            )
            .order_by(lead.c.id)
            .limit(EXAMPLES)
        ).scalars()
        out.append(
            StrandedStage(
                pipeline=pipeline_id or "",
                stage=stage_id if pipeline is not None else "",
                leads=int(count),
                examples=tuple(examples),
                to=pipeline.moved_stages.get(stage_id) if pipeline is not None else None,
            )
        )
    return _merge_removed_pipelines(out)


def _merge_removed_pipelines(groups: list[StrandedStage]) -> list[StrandedStage]:
    """A removed pipeline is one finding, not one per stage it had."""
    merged: dict[tuple[str, str], StrandedStage] = {}
    for g in groups:
        key = (g.pipeline, g.stage)
        if key in merged:
            prior = merged[key]
            examples = (prior.examples + g.examples)[:EXAMPLES]
            merged[key] = StrandedStage(g.pipeline, g.stage, prior.leads + g.leads, examples, None)
        else:
            merged[key] = g
    return list(merged.values())


def issues(loaded: LoadedConfig, groups: Sequence[StrandedStage]) -> list[Issue]:
    """Errors for the leads nothing moves, at the pipeline's line in the file."""
    out = []
    for g in groups:
        if g.to is not None:
            continue
        index = next((i for i, p in enumerate(loaded.config.pipelines) if p.id == g.pipeline), None)
        if index is None:
            path: tuple[str | int, ...] = ("pipelines",)
            fix = f"restore pipeline '{g.pipeline}', or move its leads first (leadflow move)"
        else:
            path = ("pipelines", index, "moved_stages")
            fix = (
                f"add `moved_stages: {{{g.stage}: <stage>}}` to pipeline '{g.pipeline}' "
                "to say where they go"
            )
        message = f"{g.describe()}; {fix}"
        if loaded.doc is not None:
            out.append(loaded.doc.issue(path, message))
        else:
            out.append(Issue(str(loaded.path), 1, 1, "pipelines", message))
    return out


def relocate(conn: Connection, rt: Runtime, *, now: datetime) -> AdvanceOutcome:
    """Move the open leads of every removed stage that ``moved_stages`` maps; call inside a
    transaction. Each move is a stage transition (kind ``config``) like any other."""
    outcome = AdvanceOutcome()
    for g in find(conn, rt.loaded):
        if g.to is None:
            continue
        ids = list(
            conn.execute(
                select(LEADS.c.id).where(
                    LEADS.c.status == LeadStatus.ACTIVE,
                    LEADS.c.pipeline == g.pipeline,
                    LEADS.c.stage == g.stage,
                )
            ).scalars()
        )
        reason = f"stage '{g.stage}' removed from the config (moved_stages)"
        for start in range(0, len(ids), MOVE_CHUNK):
            writer = MoveWriter(conn, rt, now)
            rows = load_rows(conn, ids[start : start + MOVE_CHUNK])
            for row in rows.values():
                writer.move(row, g.pipeline, g.to, kind="config", reason=reason, actor="config")
            writer.flush()
            outcome.merge(writer.outcome)
    return outcome


def against_database(url: str, loaded: LoadedConfig) -> tuple[list[StrandedStage], str | None]:
    """``validate``'s look at the live database: the stranded stages, or why it could not
    look (no database yet, unreachable). Opens nothing that does not exist, migrates nothing."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
            return [], "no database yet"
        engine = open_database(url, migrate=False)
    except (DatabaseUnavailable, ValueError) as exc:
        return [], f"database not checked: {exc}"
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(LEADS.name):
                return [], "no database yet"
            return find(conn, loaded), None
    finally:
        engine.dispose()
