"""The pipeline.yaml commands: ``validate``, ``lint`` and ``schema``; none changes anything."""

from __future__ import annotations

import typer

from leadflow.app.cli.common import ConfigOpt, JsonOpt, emit_json, err, out, settings_for, styled
from leadflow.config import ConfigError, load_config

commands = typer.Typer()


@commands.command()
def validate(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Check pipeline.yaml and its templates: every error at once, FILE:LINE:COL: path: message."""
    settings = settings_for(config)
    try:
        loaded = load_config(settings.config, templates=settings.templates)
    except ConfigError as exc:
        if as_json:
            emit_json({"valid": False, "errors": [i.__dict__ for i in exc.issues]})
        else:
            for issue in exc.issues:
                err.print(styled(("error", "red"), f" {issue}"), soft_wrap=True)
            err.print(f"{len(exc.issues)} error(s); nothing was changed.")
        raise typer.Exit(1) from None
    from leadflow.pipeline import stranded

    groups, not_checked = stranded.against_database(settings.db_url, loaded)
    problems = stranded.issues(loaded, groups)
    if as_json:
        emit_json(
            {
                "valid": not problems,
                "hash": loaded.hash,
                "errors": [i.__dict__ for i in problems],
                "warnings": [i.__dict__ for i in loaded.warnings],
                "stranded": [g.as_dict() for g in groups],
                "database": not_checked or "checked",
            }
        )
        if problems:
            raise typer.Exit(1)
        return
    for warning in loaded.warnings:
        err.print(styled(("warning", "yellow"), f" {warning}"), soft_wrap=True)
    for g in groups:
        if g.to is not None:
            out.print(
                f"the next run moves {g.leads} open lead(s) {g.stage} → {g.to} in pipeline "
                f"'{g.pipeline}' (moved_stages)",
                soft_wrap=True,
            )
    if problems:
        for issue in problems:
            err.print(styled(("error", "red"), f" {issue}"), soft_wrap=True)
        err.print(f"{len(problems)} error(s) against the database; nothing was changed.")
        raise typer.Exit(1)
    checked = f"; {not_checked}" if not_checked else ""
    out.print(
        f"{settings.config}: valid (config {loaded.short_hash}, {len(loaded.warnings)} "
        f"warning(s){checked})"
    )


@commands.command()
def lint(config: ConfigOpt = None) -> None:
    """Warnings only: unreachable stages, stages with no exit, cadences that never stop..."""
    settings = settings_for(config)
    loaded = load_config(settings.config, templates=settings.templates)
    for warning in loaded.warnings:
        out.print(f"warning {warning}", highlight=False, soft_wrap=True)
    if not loaded.warnings:
        out.print("no warnings")


@commands.command()
def schema() -> None:
    """Print the JSON Schema of pipeline.yaml (for editors)."""
    from leadflow.config.schema import PipelineConfig

    emit_json(PipelineConfig.model_json_schema())
