"""Warnings about configs that are valid but probably wrong (shown by ``validate``/``lint``).

These are the mistakes no CRM catches before they cost leads: stages nobody can reach,
stages nobody can leave, cadences that keep mailing after a reply, exits shadowed by an
earlier exit, and loops with no way out.
"""

from __future__ import annotations

from leadflow.config.loaded import CompiledExit, LoadedConfig
from leadflow.config.schema import Pipeline, PipelineConfig, Stage
from leadflow.config.source import Issue, Path_, YamlDocument


def _warn(doc: YamlDocument, path: Path_, message: str) -> Issue:
    return doc.issue(path, message, severity="warning")


def lint(doc: YamlDocument, loaded: LoadedConfig) -> list[Issue]:
    """Every warning, pipeline by pipeline (stage by stage, then loops), then cadences, plans."""
    config = loaded.config
    warnings: list[Issue] = []
    for pi, pipeline in enumerate(config.pipelines):
        edges = _edges(config, pipeline)
        seen = _reachable(config, pipeline, edges)
        for si, stage in enumerate(pipeline.stages):
            path: Path_ = ("pipelines", pi, "stages", si)
            warnings += _stage_warnings(doc, config, path, stage, edges, seen)
            compiled = loaded.exits.get((pipeline.id, stage.id), [])
            warnings += _shadowed_exits(doc, path, compiled)
        warnings += _loop_warnings(doc, pi, pipeline, edges)
    warnings += _cadence_warnings(doc, config)
    warnings += _unused_plans(doc, config)
    return warnings


def _edges(config: PipelineConfig, pipeline: Pipeline) -> dict[str, set[str]]:
    """Where each stage can send a lead by itself: its exits, a moving SLA, an advancing cadence."""
    edges: dict[str, set[str]] = {s.id: set() for s in pipeline.stages}
    for stage in pipeline.stages:
        edges[stage.id].update(e.to for e in stage.exits)
        if stage.sla and stage.sla.action == "move" and stage.sla.to:
            edges[stage.id].add(stage.sla.to)
        cadence_id = stage.on_enter.cadence
        if cadence_id:
            cadence = config.cadences.get(cadence_id)
            if cadence and cadence.on_complete.action == "advance" and cadence.on_complete.to:
                edges[stage.id].add(cadence.on_complete.to)
    return edges


def _reachable(config: PipelineConfig, pipeline: Pipeline, edges: dict[str, set[str]]) -> set[str]:
    """Stages reachable from the first stage, the callback re-entry stage and the lost stage."""
    starts = [pipeline.stages[0].id]
    if config.recycling.reenter_stage in edges:
        starts.append(config.recycling.reenter_stage)
    lost = config.recycling.lost_stage or next(
        (s.id for s in pipeline.stages if s.kind == "lost"), None
    )
    if lost:
        starts.append(lost)
    seen = set(starts)
    todo = list(starts)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _stage_warnings(
    doc: YamlDocument,
    config: PipelineConfig,
    path: Path_,
    stage: Stage,
    edges: dict[str, set[str]],
    seen: set[str],
) -> list[Issue]:
    """A stage nobody can reach, and an open stage nobody can leave."""
    warnings: list[Issue] = []
    if stage.id not in seen:
        warnings.append(
            _warn(
                doc,
                (*path, "id"),
                f"stage '{stage.id}' is unreachable: no exit, "
                "SLA or cadence leads into it (only manual moves can)",
            )
        )
    has_way_out = bool(edges[stage.id]) or (stage.sla is not None and stage.sla.action == "recycle")
    cadence = config.cadences.get(stage.on_enter.cadence or "")
    if cadence and cadence.on_complete.action == "recycle":
        has_way_out = True
    if stage.kind == "open" and not has_way_out:
        warnings.append(
            _warn(
                doc,
                (*path, "id"),
                f"open stage '{stage.id}' has no exit: leads entering it stay there forever",
            )
        )
    return warnings


def _shadowed_exits(doc: YamlDocument, path: Path_, compiled: list[CompiledExit]) -> list[Issue]:
    """Exits that can never fire: always false, or after an always-true or identical rule."""
    warnings: list[Issue] = []
    texts: dict[str, int] = {}
    always_from: int | None = None
    for ei, exit_ in enumerate(compiled):
        epath = (*path, "exits", ei, "when")
        constant = exit_.rule.constant_value()
        normalized = " ".join(exit_.rule.text.split())
        if always_from is not None:
            warnings.append(
                _warn(
                    doc,
                    epath,
                    f"exit can never fire: exits[{always_from}] before it always matches",
                )
            )
        elif constant is False:
            warnings.append(_warn(doc, epath, "exit can never fire: its rule is always false"))
        elif normalized in texts:
            warnings.append(
                _warn(
                    doc,
                    epath,
                    f"exit can never fire: exits[{texts[normalized]}] has the same rule and wins",
                )
            )
        texts.setdefault(normalized, ei)
        if constant is True and always_from is None:
            always_from = ei
    return warnings


def _loop_warnings(
    doc: YamlDocument, pi: int, pipeline: Pipeline, edges: dict[str, set[str]]
) -> list[Issue]:
    """Cycles with no way out: strongly connected groups of open stages with no exit."""
    ids = [s.id for s in pipeline.stages]
    warnings: list[Issue] = []
    for group in _closed_cycles(edges, {s.id for s in pipeline.stages if s.kind == "open"}):
        si = ids.index(sorted(group, key=ids.index)[0])
        warnings.append(
            _warn(
                doc,
                ("pipelines", pi, "stages", si, "id"),
                f"stages {', '.join(sorted(group, key=ids.index))} form a loop with no way out",
            )
        )
    return warnings


def _cadence_warnings(doc: YamlDocument, config: PipelineConfig) -> list[Issue]:
    """Cadences that keep mailing after a reply, and cadences no stage (nor recycling) uses."""
    used = {s.on_enter.cadence for p in config.pipelines for s in p.stages if s.on_enter.cadence}
    if config.recycling.cadence:
        used.add(config.recycling.cadence)
    warnings: list[Issue] = []
    for cid, cadence in config.cadences.items():
        if not cadence.stop_on:
            warnings.append(
                _warn(
                    doc,
                    ("cadences", cid, "stop_on"),
                    "cadence has no stop condition: it keeps mailing after a reply",
                )
            )
        elif "replied" not in cadence.stop_on:
            warnings.append(
                _warn(doc, ("cadences", cid, "stop_on"), "cadence does not stop on 'replied'")
            )
        if cid not in used:
            warnings.append(
                _warn(doc, ("cadences", cid), f"cadence '{cid}' is not used by any stage")
            )
    return warnings


def _unused_plans(doc: YamlDocument, config: PipelineConfig) -> list[Issue]:
    used = {s.on_enter.checkins for p in config.pipelines for s in p.stages if s.on_enter.checkins}
    return [
        _warn(doc, ("checkins", plan_id), f"check-in plan '{plan_id}' is not used by any stage")
        for plan_id in config.checkins
        if plan_id not in used
    ]


def _closed_cycles(edges: dict[str, set[str]], open_ids: set[str]) -> list[set[str]]:
    """Strongly connected groups (size > 1) of open stages whose edges never leave the group."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group: set[str] = set()
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.add(item)
                if item == node:
                    break
            groups.append(group)

    for node in edges:
        if node not in index:
            visit(node)
    closed = []
    for group in groups:
        if len(group) < 2 or not group <= open_ids:
            continue
        leaves = any(nxt not in group for node in group for nxt in edges[node])
        if not leaves:
            closed.append(group)
    return closed
