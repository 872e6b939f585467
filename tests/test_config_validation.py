"""Pipeline as code: broken files are rejected with every error, exactly placed and worded."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DEFAULT_CONFIG, TEMPLATES

from leadflow.config import ConfigError, load_config

BASE = DEFAULT_CONFIG.read_text(encoding="utf-8")
F = "config/pipeline.yaml"


def errors_for(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(Path(F), templates=TEMPLATES, text=text)
    return [str(issue) for issue in caught.value.issues]


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, f"fixture anchor not found: {old!r}"
    return text.replace(old, new, 1)


BROKEN = {
    "yaml syntax error": (
        edit("  daily_cap: 400\n", "  daily_cap: [400\n"),
        [
            f"{F}:17:13: YAML syntax error: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence)"
        ],
    ),
    "unknown key with suggestion": (
        edit("  reply_to: sales@", "  reply_too: sales@"),
        [f"{F}:12:3: sender.reply_too: unknown key 'reply_too' (did you mean 'reply_to'?)"],
    ),
    "unknown top-level section": (
        edit("holidays:\n", "holidayz:\n"),
        [f"{F}:20:1: holidayz: unknown key 'holidayz' (did you mean 'holidays'?)"],
    ),
    "wrong type": (
        edit("  daily_cap: 400", "  daily_cap: lots"),
        [
            f"{F}:16:14: sender.daily_cap: Input should be a valid integer, unable to parse "
            "string as an integer"
        ],
    ),
    "duplicate key": (
        edit("  daily_cap: 400\n", "  daily_cap: 400\n  daily_cap: 500\n"),
        [f"{F}:17:3: sender.daily_cap: duplicate key 'daily_cap' (first defined on line 16)"],
    ),
    "duplicate stage id": (
        edit("      - id: qualified\n", "      - id: prospect\n"),
        [
            f"{F}:150:18: pipelines[0].stages[1].exits[1].to: exit to unknown stage 'qualified'",
            f"{F}:151:13: pipelines[0].stages[2].id: duplicate stage id 'prospect' "
            "(also stages[1])",
        ],
    ),
    "exit to unknown stage": (
        edit("{to: negotiation, when:", "{to: negotation, when:"),
        [
            f"{F}:171:18: pipelines[0].stages[4].exits[0].to: exit to unknown stage 'negotation' "
            "(did you mean 'negotiation'?)"
        ],
    ),
    "unknown field in a rule": (
        edit('when: "company_size >= 1000"', 'when: "company_sise >= 1000"'),
        [
            f"{F}:55:31: scoring.fit[3].when: rule: unknown field 'company_sise' "
            "(did you mean 'company_size'?)"
        ],
    ),
    "rule syntax error": (
        edit('when: "company_size >= 1000"', 'when: "company_size >= "'),
        [f"{F}:55:47: scoring.fit[3].when: rule: syntax error: invalid syntax"],
    ),
    "rule reaching for python internals": (
        edit('when: "company_size >= 1000"', 'when: "company.__class__ == 1"'),
        [f"{F}:55:39: scoring.fit[3].when: rule: attribute access ('.__class__') is not allowed"],
    ),
    "rule comparing text with a number": (
        edit('when: "company_size >= 1000"', 'when: "industry >= 1000"'),
        [
            f"{F}:55:31: scoring.fit[3].when: rule: cannot compare text field 'industry' with a "
            "number"
        ],
    ),
    "missing template": (
        edit("template: case_study", "template: case_studdy"),
        [
            f"{F}:91:31: cadences.outbound.steps[2].template: template 'case_studdy' not found "
            "(did you mean 'case_study'?)"
        ],
    ),
    "negative delay": (
        edit(
            "template: breakup, delay_business_days: 5",
            "template: breakup, delay_business_days: -5",
        ),
        [
            f"{F}:92:63: cadences.outbound.steps[3].delay_business_days: Input should be greater "
            "than or equal to 0"
        ],
    ),
    "invalid cron": (
        edit('  tick: "*/15 * * * *"', '  tick: "*/15 * * *"'),
        [f"{F}:25:9: schedules.tick: invalid cron expression '*/15 * * *'"],
    ),
    "invalid time zone": (
        edit("timezone: America/New_York # for", "timezone: America/New_Yrok # for"),
        [f"{F}:7:11: timezone: unknown time zone 'America/New_Yrok'"],
    ),
    "invalid stage id": (
        edit("  - id: b2b\n", "  - id: B2B Pipeline\n"),
        [
            f"{F}:132:9: pipelines[0].id: 'B2B Pipeline' is not a valid id (use lower_snake_case: "
            "letters, digits and _, starting with a letter)"
        ],
    ),
    "unknown cadence": (
        edit("on_enter: {cadence: outbound}", "on_enter: {cadence: outbond}"),
        [
            f"{F}:147:29: pipelines[0].stages[1].on_enter.cadence: unknown cadence 'outbond' "
            "(did you mean 'outbound'?)"
        ],
    ),
    "unknown stop event": (
        edit(
            "stop_on: [replied, unsubscribed, bounced]", "stop_on: [replyed, unsubscribed, bounced]"
        ),
        [
            f"{F}:100:15: cadences.meeting_follow_up.stop_on[0]: unknown event type 'replyed' "
            "(did you mean 'replied'?)"
        ],
    ),
    "send window backwards": (
        edit('start: "09:00", end: "11:30"', 'start: "12:00", end: "11:30"'),
        [f"{F}:83:13: cadences.outbound.window: window start 12:00 must be before its end 11:30"],
    ),
    "unknown holiday country": (
        edit("  country: US\n", "  country: XX\n"),
        [
            f"{F}:21:12: holidays.country: unknown holiday country 'XX': use an ISO 3166-1 alpha-2 "
            "code supported by the holidays package (e.g. US, DE, GB)"
        ],
    ),
    "unknown re-entry stage": (
        edit("  reenter_stage: prospect", "  reenter_stage: prospekt"),
        [
            f"{F}:117:18: recycling.reenter_stage: stage 'prospekt' does not exist in pipeline "
            "'b2b' (did you mean 'prospect'?)"
        ],
    ),
    "empty pipeline": (
        BASE[: BASE.index("    stages:\n")] + "    stages: []\n",
        [
            f"{F}:136:13: pipelines[0].stages: List should have at least 1 item after validation, "
            "not 0"
        ],
    ),
    "missing required section": (
        edit("recycling:\n  callback_days: 45\n", "recycled:\n  callback_days: 45\n"),
        [
            f"{F}:6:1: missing required key 'recycling'",
            f"{F}:115:1: recycled: unknown key 'recycled' (did you mean 'recycling'?)",
        ],
    ),
    "unknown event type in a rule": (
        edit(
            'events("won") > 0\'}\n          - {to: lost',
            'events("wonn") > 0\'}\n          - {to: lost',
        ),
        [
            f"{F}:172:38: pipelines[0].stages[4].exits[1].when: rule: unknown event type 'wonn' "
            "(did you mean 'won'?)"
        ],
    ),
    "mapping onto engine state": (
        edit('"Deal Value": deal_value', '"Deal Value": score'),
        [
            f"{F}:42:19: intake.mapping.Deal Value: unknown lead field 'score' (did you mean "
            "'source'?); declare custom fields under intake.attributes"
        ],
    ),
    "attribute shadowing a derived field": (
        edit("web_visits: int", "days_in_stage: int"),
        [
            f"{F}:45:5: intake.attributes.days_in_stage: custom attribute 'days_in_stage' shadows "
            "the lead field of the same name"
        ],
    ),
    "duplicate check-in id": (
        edit("{id: month_one,", "{id: onboarding,"),
        [
            f"{F}:124:5: checkins.customer_success: duplicate check-in id 'onboarding' (check-ins "
            "and renewals share ids)"
        ],
    ),
    "several errors at once": (
        edit(
            "  daily_cap: 400",
            "  daily_cap: lots",
            edit("  reply_to: sales@", "  reply_too: sales@"),
        ),
        [
            f"{F}:12:3: sender.reply_too: unknown key 'reply_too' (did you mean 'reply_to'?)",
            f"{F}:16:14: sender.daily_cap: Input should be a valid integer, unable to parse "
            "string as an integer",
        ],
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_config_is_rejected_with_exact_errors(case: str) -> None:
    text, expected = BROKEN[case]
    assert errors_for(text) == expected


def test_default_config_is_valid_without_warnings() -> None:
    loaded = load_config(DEFAULT_CONFIG, templates=TEMPLATES)
    assert [str(w) for w in loaded.warnings] == []
    assert len(loaded.hash) == 64


def test_template_that_reaches_python_internals_fails_validation(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    for source in TEMPLATES.iterdir():
        (templates / source.name).write_text(source.read_text(encoding="utf-8"), "utf-8")
    (templates / "welcome.html.j2").write_text(
        '{% extends "base.html.j2" %}{% block subject %}Hi{% endblock %}'
        "{% block content %}{{ lead.__class__.__mro__ }}{% endblock %}",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(DEFAULT_CONFIG, templates=templates)
    messages = " ".join(str(i) for i in caught.value.issues)
    assert "welcome.html.j2" in messages
    assert "__class__" in messages


LINT = {
    "unreachable stage": (
        edit(
            '          - {to: customer, when: "days_in_stage >= 14", reason: onboarding '
            "finished}\n",
            '          - {to: lost, when: "days_in_stage >= 14"}\n',
        ),
        "stage 'customer' is unreachable: no exit, SLA or cadence leads into it "
        "(only manual moves can)",
    ),
    "open stage without exit": (
        edit(
            "        exits:\n          - {to: meeting, when: 'events(\"meeting_booked\") > 0'}\n"
            "        sla: {max_days: 21, action: recycle, reason: qualified but no meeting in "
            "3 weeks}\n",
            "",
        ),
        "open stage 'qualified' has no exit: leads entering it stay there forever",
    ),
    "cadence without stop condition": (
        edit("    stop_on: [replied, unsubscribed, bounced]\n", "    stop_on: []\n"),
        "cadence has no stop condition: it keeps mailing after a reply",
    ),
    "exit shadowed by an always-true exit": (
        edit(
            '          - {to: prospect, when: "score >= 20", reason: fit enough to work}\n',
            '          - {to: prospect, when: "true"}\n',
        ),
        "exit can never fire: exits[0] before it always matches",
    ),
    "exit that is always false": (
        edit(
            "{to: lost, when: 'score < 10 and days_in_stage >= 3', reason: poor fit}",
            '{to: lost, when: "1 > 2"}',
        ),
        "exit can never fire: its rule is always false",
    ),
}


@pytest.mark.parametrize("case", list(LINT))
def test_lint_warns_about_probable_mistakes(case: str) -> None:
    text, expected = LINT[case]
    loaded = load_config(Path(F), templates=TEMPLATES, text=text)
    assert expected in [w.message for w in loaded.warnings]


def test_loop_with_no_way_out_is_reported() -> None:
    text = edit(
        "          - {to: lost, when: 'events(\"lost\") > 0'}\n        sla: {max_days: 30, "
        "action: flag}\n      - id: proposal",
        "          - {to: proposal, when: 'events(\"lost\") > 0'}\n      - id: proposal",
    )
    text = edit(
        '          - {to: negotiation, when: \'events("replied") > 0 or events("meeting_booked")'
        " > 0'}\n          - {to: won, when: 'events(\"won\") > 0'}\n          - {to: lost, when: "
        "'events(\"lost\") > 0'}\n        sla: {max_days: 30, action: flag}\n",
        "          - {to: meeting, when: 'events(\"replied\") > 0'}\n",
        text,
    )
    loaded = load_config(Path(F), templates=TEMPLATES, text=text)
    assert "stages meeting, proposal form a loop with no way out" in [
        w.message for w in loaded.warnings
    ]


def test_an_alias_bomb_is_refused_in_bounded_time_and_memory(tmp_path: Path) -> None:
    """Nine levels of nine aliases: 387 million values if expanded; refused with one error."""
    import time

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        refs = ", ".join(f"*a{level - 1}" for _ in range(9))
        lines.append(f"a{level}: &a{level} [{refs}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(bomb, templates=TEMPLATES)
    assert time.monotonic() - started < 10
    (issue,) = caught.value.issues
    assert "expands to more than 100,000 values" in issue.message


def test_a_file_too_large_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * 1_000_001 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(big, templates=TEMPLATES)
    assert [i.message for i in caught.value.issues] == [
        "the file is larger than 1,000,000 characters"
    ]
