"""A validated config with its rules compiled once: what every engine call reads.

``load_config`` (validate.py) is the only maker of a ``LoadedConfig``; everything else takes
one and never sees an unchecked file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from leadflow.config.schema import PipelineConfig, Stage
from leadflow.config.source import Issue, Path_, YamlDocument
from leadflow.rules import Catalog, Rule

StageKey = tuple[str, str]


@dataclass(frozen=True)
class CompiledExit:
    to: str
    rule: Rule
    reason: str


@dataclass
class LoadedConfig:
    """A validated config with its rules compiled once, ready for every engine call."""

    path: Path
    config: PipelineConfig
    hash: str
    catalog: Catalog
    fit_rules: list[tuple[str, float, Rule]] = field(default_factory=list)
    bant_rules: dict[str, Rule] = field(default_factory=dict)
    exits: dict[StageKey, list[CompiledExit]] = field(default_factory=dict)
    entries: dict[StageKey, Rule] = field(default_factory=dict)
    matches: dict[str, Rule] = field(default_factory=dict)
    warnings: list[Issue] = field(default_factory=list)
    # kept for checks made later against the database (leadflow/pipeline/stranded.py): their issues
    # point at the file's lines like every other
    doc: YamlDocument | None = field(default=None, repr=False, compare=False)

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    def stage(self, pipeline_id: str, stage_id: str) -> Stage | None:
        return self._stages.get((pipeline_id, stage_id))

    @cached_property
    def _stages(self) -> dict[tuple[str, str], Stage]:
        """Every stage by (pipeline, stage) id: the engine asks per lead moved."""
        return {(p.id, s.id): s for p in self.config.pipelines for s in p.stages}

    def template_names(self) -> set[str]:
        return {name for _path, name in template_refs(self.config)}


def template_refs(config: PipelineConfig) -> list[tuple[Path_, str]]:
    refs: list[tuple[Path_, str]] = []
    for cid, cadence in config.cadences.items():
        for si, step in enumerate(cadence.steps):
            if step.template:
                refs.append((("cadences", cid, "steps", si, "template"), step.template))
            for vi, variant in enumerate(step.variants or []):
                path = ("cadences", cid, "steps", si, "variants", vi, "template")
                refs.append((path, variant.template))
    for plan_id, plan in config.checkins.items():
        for ci, checkin in enumerate(plan.checkins):
            refs.append((("checkins", plan_id, "checkins", ci, "template"), checkin.template))
        for ri, renewal in enumerate(plan.renewals):
            refs.append((("checkins", plan_id, "renewals", ri, "template"), renewal.template))
    return refs
