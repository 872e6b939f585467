"""Load ``pipeline.yaml`` and check everything before any run touches data.

Structure errors come from the pydantic schema, cross-references and rules from here, and
template problems from the template set; all are collected and reported at once, each with
file, line, column and key path. A config that produced any error is never used.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from croniter import croniter
from pydantic import ValidationError

from leadflow.config.alerts import alert_issues
from leadflow.config.loaded import CompiledExit, LoadedConfig, template_refs
from leadflow.config.schema import FLOWS, Pipeline, PipelineConfig, Stage
from leadflow.config.schema_errors import schema_issues
from leadflow.config.source import ConfigError, Issue, Path_, YamlDocument, load_yaml, parse_yaml
from leadflow.pipeline.business_time import HolidayCalendar, is_valid_zone
from leadflow.pipeline.events import KNOWN_EVENTS
from leadflow.rules import Rule, RuleError, compile_rule
from leadflow.rules.fields import DERIVED, FUNCTIONS, LEAD_COLUMNS, catalog
from leadflow.suggest import did_you_mean
from models.tables import LeadBase

# Fields an import may set: the LeadBase columns (not engine state such as stage or score).
IMPORTABLE_FIELDS = tuple(name for name in LeadBase.model_fields if name != "attributes")
_EVENT_ARG = re.compile(r"\b(" + "|".join(FUNCTIONS) + r")\(\s*([\"'])(.*?)\2")


def load_config(
    path: Path, *, templates: Path | None = None, text: str | None = None
) -> LoadedConfig:
    """Parse, validate and compile; raises ConfigError listing every problem."""
    doc = parse_yaml(text, str(path)) if text is not None else load_yaml(path)
    raw_text = doc.text
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.issue((), "the top level must be a mapping of sections")])
    try:
        config = PipelineConfig.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(schema_issues(doc, exc)) from None
    loaded = LoadedConfig(
        path=path,
        config=config,
        hash=hashlib.sha256(raw_text.encode("utf-8")).hexdigest(),
        catalog=catalog(config.intake.attributes),
        doc=doc,
    )
    issues = _Checker(doc, loaded, templates).run()
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise ConfigError(errors)
    from leadflow.config.lint import lint

    loaded.warnings = [i for i in issues if i.severity != "error"] + lint(doc, loaded)
    return loaded


# --- cross-reference checks ---------------------------------------------------------------


class _Checker:
    def __init__(self, doc: YamlDocument, loaded: LoadedConfig, templates: Path | None):
        self.doc = doc
        self.loaded = loaded
        self.config = loaded.config
        self.templates = templates
        self.issues: list[Issue] = []

    def error(
        self, path: Path_, message: str, *, key: bool = False, offset: int | None = None
    ) -> None:
        self.issues.append(self.doc.issue(path, message, key=key, offset=offset))

    def rule(self, path: Path_, text: str) -> Rule | None:
        try:
            compiled = compile_rule(text, self.loaded.catalog)
        except RuleError as exc:
            self.error(path, f"rule: {exc.message}", offset=exc.offset)
            return None
        for match in _EVENT_ARG.finditer(text):
            event_type = match.group(3)
            if event_type not in KNOWN_EVENTS:
                self.error(
                    path,
                    f"rule: unknown event type '{event_type}'"
                    f"{did_you_mean(event_type, KNOWN_EVENTS)}",
                    offset=match.start(3),
                )
                return None
        return compiled

    def run(self) -> list[Issue]:
        self.zones()
        self.schedules()
        self.attributes()
        self.scoring()
        self.pipelines()
        self.cadences()
        self.checkins()
        self.recycling()
        self.labels()
        self.currency()
        self.team()
        self.issues += alert_issues(self.doc, self.config.alerts)
        self.template_checks()
        return self.issues

    def team(self) -> None:
        from leadflow.config.team_checks import check_team

        check_team(self)

    def zones(self) -> None:
        if not is_valid_zone(self.config.timezone):
            self.error(("timezone",), f"unknown time zone '{self.config.timezone}'")
        for pi, pipeline in enumerate(self.config.pipelines):
            if pipeline.timezone and not is_valid_zone(pipeline.timezone):
                self.error(
                    ("pipelines", pi, "timezone"), f"unknown time zone '{pipeline.timezone}'"
                )
        holidays = self.config.holidays
        try:
            HolidayCalendar(holidays.country, holidays.subdivision, holidays.extra)
        except ValueError as exc:
            self.error(("holidays", "country"), str(exc))

    def schedules(self) -> None:
        schedules = self.config.schedules
        if not is_valid_zone(schedules.timezone):
            self.error(("schedules", "timezone"), f"unknown time zone '{schedules.timezone}'")
        for name in FLOWS:
            cron = getattr(schedules, name)
            if cron is not None and not croniter.is_valid(cron):
                self.error(("schedules", name), f"invalid cron expression '{cron}'")

    def attributes(self) -> None:
        for name in self.config.intake.attributes:
            if name in LEAD_COLUMNS or name in DERIVED:
                self.error(
                    ("intake", "attributes", name),
                    f"custom attribute '{name}' shadows the lead field of the same name",
                    key=True,
                )
        targets = set(IMPORTABLE_FIELDS) | set(self.config.intake.attributes)
        for column, target in self.config.intake.mapping.items():
            if target not in targets:
                self.error(
                    ("intake", "mapping", column),
                    f"unknown lead field '{target}'{did_you_mean(target, targets)}; declare custom "
                    "fields under intake.attributes",
                )

    def scoring(self) -> None:
        scoring = self.config.scoring
        seen: set[str] = set()
        for i, fit in enumerate(scoring.fit):
            if fit.id in seen:
                self.error(("scoring", "fit", i, "id"), f"duplicate fit rule id '{fit.id}'")
            seen.add(fit.id)
            compiled = self.rule(("scoring", "fit", i, "when"), fit.when)
            if compiled:
                self.loaded.fit_rules.append((fit.id, fit.points, compiled))
        for name, text in scoring.bant.rules().items():
            compiled = self.rule(("scoring", "bant", name), text)
            if compiled:
                self.loaded.bant_rules[name] = compiled
        for event_type in scoring.engagement.points:
            if event_type not in KNOWN_EVENTS:
                self.error(
                    ("scoring", "engagement", "points", event_type),
                    f"unknown event type '{event_type}'{did_you_mean(event_type, KNOWN_EVENTS)}",
                    key=True,
                )
        if not scoring.grades:
            self.error(("scoring", "grades"), "at least one grade is needed")

    def pipelines(self) -> None:
        seen_pipelines: dict[str, int] = {}
        for pi, pipeline in enumerate(self.config.pipelines):
            base: Path_ = ("pipelines", pi)
            if pipeline.id in seen_pipelines:
                first = seen_pipelines[pipeline.id]
                self.error(
                    (*base, "id"),
                    f"duplicate pipeline id '{pipeline.id}' (also pipelines[{first}])",
                )
            seen_pipelines.setdefault(pipeline.id, pi)
            if pipeline.match:
                compiled = self.rule((*base, "match"), pipeline.match)
                if compiled:
                    self.loaded.matches[pipeline.id] = compiled
            ids = [s.id for s in pipeline.stages]
            self.moved_stages(base, pipeline, ids)
            first_index: dict[str, int] = {}
            for si, stage in enumerate(pipeline.stages):
                spath: Path_ = (*base, "stages", si)
                if stage.id in first_index:
                    self.error(
                        (*spath, "id"),
                        f"duplicate stage id '{stage.id}' (also stages[{first_index[stage.id]}])",
                    )
                first_index.setdefault(stage.id, si)
                self.stage(spath, pipeline, stage, ids)

    def moved_stages(self, base: Path_, pipeline: Pipeline, ids: list[str]) -> None:
        """``moved_stages`` names removed stages only, each moving to a stage that exists."""
        for removed, target in pipeline.moved_stages.items():
            mpath: Path_ = (*base, "moved_stages", removed)
            if removed in ids:
                self.error(
                    mpath,
                    f"'{removed}' is still a stage of pipeline '{pipeline.id}': "
                    "moved_stages lists removed stages only",
                    key=True,
                )
            elif target not in ids:
                self.error(mpath, f"moves to unknown stage '{target}'{did_you_mean(target, ids)}")

    def stage(self, spath: Path_, pipeline: Pipeline, stage: Stage, ids: list[str]) -> None:
        """One stage: compile its entry and exit rules, check what it points at."""
        key = (pipeline.id, stage.id)
        if stage.entry:
            compiled = self.rule((*spath, "entry"), stage.entry)
            if compiled:
                self.loaded.entries[key] = compiled
        self.loaded.exits[key] = self.stage_exits(spath, stage, ids)
        if stage.sla and stage.sla.to and stage.sla.to not in ids:
            self.error(
                (*spath, "sla", "to"),
                f"SLA moves to unknown stage '{stage.sla.to}'{did_you_mean(stage.sla.to, ids)}",
            )
        cadence = stage.on_enter.cadence
        if cadence and cadence not in self.config.cadences:
            self.error(
                (*spath, "on_enter", "cadence"),
                f"unknown cadence '{cadence}'{did_you_mean(cadence, self.config.cadences)}",
            )
        plan = stage.on_enter.checkins
        if plan and plan not in self.config.checkins:
            self.error(
                (*spath, "on_enter", "checkins"),
                f"unknown check-in plan '{plan}'{did_you_mean(plan, self.config.checkins)}",
            )

    def stage_exits(self, spath: Path_, stage: Stage, ids: list[str]) -> list[CompiledExit]:
        """Check where each exit goes and compile its rule, in the order they are tried."""
        exits: list[CompiledExit] = []
        for ei, exit_ in enumerate(stage.exits):
            epath: Path_ = (*spath, "exits", ei)
            if exit_.to not in ids:
                self.error(
                    (*epath, "to"),
                    f"exit to unknown stage '{exit_.to}'{did_you_mean(exit_.to, ids)}",
                )
            elif exit_.to == stage.id:
                self.error((*epath, "to"), "a stage cannot exit to itself")
            compiled = self.rule((*epath, "when"), exit_.when)
            if compiled:
                reason = exit_.reason or f"{exit_.when}"
                exits.append(CompiledExit(exit_.to, compiled, reason))
        return exits

    def cadences(self) -> None:
        all_stage_ids = {s.id for p in self.config.pipelines for s in p.stages}
        for cid, cadence in self.config.cadences.items():
            seen: set[str] = set()
            for si, step in enumerate(cadence.steps):
                if step.id in seen:
                    self.error(
                        ("cadences", cid, "steps", si, "id"), f"duplicate step id '{step.id}'"
                    )
                seen.add(step.id)
                variant_ids = [v.id for v in step.variants or []]
                if len(set(variant_ids)) != len(variant_ids):
                    self.error(("cadences", cid, "steps", si, "variants"), "duplicate variant ids")
            for i, event_type in enumerate(cadence.stop_on):
                if event_type not in KNOWN_EVENTS:
                    self.error(
                        ("cadences", cid, "stop_on", i),
                        f"unknown event type '{event_type}'"
                        f"{did_you_mean(event_type, KNOWN_EVENTS)}",
                    )
            target = cadence.on_complete.to
            if target and target not in all_stage_ids:
                self.error(
                    ("cadences", cid, "on_complete", "to"),
                    f"unknown stage '{target}'{did_you_mean(target, all_stage_ids)}",
                )
            elif target:
                for pipeline in self.config.pipelines:
                    uses = any(s.on_enter.cadence == cid for s in pipeline.stages) or (
                        self.config.recycling.cadence == cid
                    )
                    if uses and pipeline.stage(target) is None:
                        self.error(
                            ("cadences", cid, "on_complete", "to"),
                            f"stage '{target}' does not exist in pipeline '{pipeline.id}', "
                            "which uses this cadence",
                        )

    def checkins(self) -> None:
        attributes = self.config.intake.attributes
        for plan_id, plan in self.config.checkins.items():
            ids = [c.id for c in plan.checkins] + [r.id for r in plan.renewals]
            for duplicate in sorted({i for i in ids if ids.count(i) > 1}):
                self.error(
                    ("checkins", plan_id),
                    f"duplicate check-in id '{duplicate}' (check-ins and renewals share ids)",
                )
            for ri, renewal in enumerate(plan.renewals):
                if renewal.date_field not in attributes:
                    self.error(
                        ("checkins", plan_id, "renewals", ri, "date_field"),
                        f"'{renewal.date_field}' is not a declared custom attribute"
                        f"{did_you_mean(renewal.date_field, attributes)}",
                    )

    def recycling(self) -> None:
        recycling = self.config.recycling
        if recycling.cadence and recycling.cadence not in self.config.cadences:
            self.error(
                ("recycling", "cadence"),
                f"unknown cadence '{recycling.cadence}'"
                f"{did_you_mean(recycling.cadence, self.config.cadences)}",
            )
        for pi, pipeline in enumerate(self.config.pipelines):
            ids = [s.id for s in pipeline.stages]
            if recycling.reenter_stage not in ids:
                self.error(
                    ("recycling", "reenter_stage"),
                    f"stage '{recycling.reenter_stage}' does not exist in pipeline "
                    f"'{pipeline.id}'{did_you_mean(recycling.reenter_stage, ids)}",
                )
            if recycling.lost_stage is not None and recycling.lost_stage not in ids:
                self.error(
                    ("recycling", "lost_stage"),
                    f"stage '{recycling.lost_stage}' does not exist in pipeline '{pipeline.id}'"
                    f"{did_you_mean(recycling.lost_stage, ids)}",
                )
            if recycling.lost_stage is None and not any(s.kind == "lost" for s in pipeline.stages):
                self.error(
                    ("pipelines", pi, "stages"),
                    "the pipeline needs a stage of kind 'lost' (where leads go after "
                    "recycling.max_recycles)",
                )

    def labels(self) -> None:
        from leadflow.mail.context import LABELLED_FIELDS

        for name in self.config.labels:
            if name not in LABELLED_FIELDS:
                self.error(
                    ("labels", name),
                    f"no labels for '{name}'{did_you_mean(name, LABELLED_FIELDS)}; "
                    f"labels are given for: {', '.join(LABELLED_FIELDS)}",
                    key=True,
                )

    def currency(self) -> None:
        from leadflow.reporting.money import is_currency

        code = self.config.currency
        if not is_currency(code):
            hint = f" (did you mean '{code.upper()}'?)" if is_currency(code.upper()) else ""
            self.error(
                ("currency",),
                f"unknown currency '{code}'{hint}: use an ISO 4217 code such as USD, EUR or GBP",
            )

    def template_checks(self) -> None:
        if self.templates is None:
            return
        from leadflow.mail.rendering import TemplateSet

        template_set = TemplateSet(self.templates)
        attribute_keys = list(self.config.intake.attributes)
        reported: dict[str, list[Any]] = {}
        for path, name in template_refs(self.config):
            if name not in reported:
                reported[name] = template_set.check(
                    name, attribute_keys=attribute_keys, labels=self.config.labels
                )
            problems = reported[name]
            for problem in problems:
                if "not found" in problem.message or "does not exist" in problem.message:
                    self.error(path, problem.message)
                else:
                    self.issues.append(Issue(problem.file, problem.line, 1, "", problem.message))
            reported[name] = []  # report each template's own problems once
