"""``leadflow learn`` and ``leadflow score evaluate``: fit rules learned from won/lost history,
written as a proposed config for review, and how well today's rules separate won from lost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leadflow.app.cli.common import (
    ConfigOpt,
    JsonOpt,
    NowOpt,
    check_writable,
    emit_json,
    fail,
    instant,
    out,
    runtime,
    settings_for,
)

commands = typer.Typer()
score = typer.Typer(help="How well the scoring rules work.", no_args_is_help=True)

GRADES = ("quantiles",)

HistoryArg = Annotated[
    Path | None,
    typer.Argument(
        help="A CSV or JSONL export of past leads, read through intake.mapping like `import` "
        "(default: the closed leads in the database)."
    ),
]
OutcomeOpt = Annotated[
    str | None,
    typer.Option(
        help="With a file: the column holding the outcome. With the database: a stage; "
        "positive means the lead reached it (default: won against lost)."
    ),
]
PositiveOpt = Annotated[
    str | None, typer.Option(help="With a file: the outcome value that counts as positive.")
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude", help="A field not to learn from (filled in only after contact); repeat."
    ),
]


@commands.command()
def learn(
    history: HistoryArg = None,
    outcome: OutcomeOpt = None,
    positive: PositiveOpt = None,
    exclude: ExcludeOpt = None,
    max_rules: Annotated[int, typer.Option(min=1, max=100, help="Rules at most.")] = 25,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split.")] = 0,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write the proposed config here.")
    ] = None,
    grades: Annotated[
        str | None, typer.Option(help="'quantiles': propose grade thresholds as well.")
    ] = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Learn fit rules from won/lost history; report them against today's rules on held-out
    leads and, with --out, write a proposed config to review (never applied by itself)."""
    from leadflow.learning.proposal import propose
    from leadflow.learning.runs import (
        NotEnoughHistory,
        check_request,
        learn_from,
        provenance,
        write_checked,
    )

    when = instant(now)
    if grades is not None and grades not in GRADES:
        fail(f"--grades {grades!r}: the only choice is {', '.join(GRADES)}")
    if out_path is not None:
        check_writable(out_path, "--out")
    settings = settings_for(config)
    with runtime(config) as rt:
        problem = check_request(
            rt.loaded, history, outcome=outcome, positive=positive, exclude=exclude or []
        )
        if problem:
            fail(problem)
        try:
            learned, grade_floors, source_text = learn_from(
                rt,
                history,
                outcome=outcome,
                positive=positive,
                exclude=exclude or [],
                max_rules=max_rules,
                seed=seed,
                grades=grades is not None,
            )
        except NotEnoughHistory as exc:
            fail(str(exc))
    if out_path is not None:
        proposed = propose(
            source_text,
            learned.rules,
            provenance=provenance(learned, now=when),
            grades=grade_floors,
        )
        write_checked(out_path, proposed, templates=settings.templates)
    if as_json:
        document = learned.as_dict()
        document["grades"] = grade_floors
        document["proposed_config"] = str(out_path) if out_path else None
        emit_json(document)
        return
    from leadflow.learning.learn import render_report

    out.print(render_report(learned), soft_wrap=True)
    if out_path is not None:
        out.print(
            f"proposed config written to {out_path}; review it with `leadflow validate --config "
            f"{out_path}` and `leadflow plan --config {out_path}`",
            soft_wrap=True,
        )


@score.command()
def evaluate(
    outcome: OutcomeOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """How well today's fit rules separate won from lost on the closed leads in the
    database: AUC, lift in the top decile, observed rate per points band."""
    from leadflow.learning.runs import (
        NotEnoughHistory,
        check_request,
        evaluate_database,
        render_quality,
    )

    with runtime(config) as rt:
        problem = check_request(rt.loaded, None, outcome=outcome, positive=None, exclude=[])
        if problem:
            fail(problem)
        try:
            quality, target = evaluate_database(rt, outcome=outcome)
        except NotEnoughHistory as exc:
            fail(str(exc))
    if as_json:
        emit_json({"target": target, **quality.as_dict()})
        return
    out.print(render_quality(quality, title=f"today's fit rules, {target}"), soft_wrap=True)
