"""The markdown of a run's artifact (``tick-summary`` ...): what a person needs, exactly."""

from __future__ import annotations

from leadflow.pipeline.summaries import tick_markdown


def test_a_sending_run_shows_its_sends_deferrals_and_failures_and_hides_bookkeeping() -> None:
    result = {
        "config": {"reevaluated": 0, "relocated": {"examined": 0, "moves": []}, "stranded": []},
        "nurture": {
            "claimed": 9,
            "sent": 5,
            "statuses": {"sent": 5, "bounced": 1},
            "deferred": {"send window": 2, "daily cap": 0},
            "cancelled": {},
            "suppressed": 0,
            "render_failed": 1,
            "templates": {"welcome": 3, "case_study": 2},
            "unknown_reconciled": 4,
            "summary": "sent 5, deferred 2 (send window), bounced 1 (smtp)",
            "batches": 3,
        },
        "mailbox": {
            "fetched": 2,
            "recorded": 2,
            "already_known": 0,
            "unmatched": 0,
            "kinds": {"replied": 1, "bounced": 1, "out_of_office": 0},
            "paused": 0,
            "suppressed": 0,
            "folders": {},
            "errors": [],
            "summary": "read 2 new message(s), bounced 1, replied 1",
        },
        "checkins": {"claimed": 0, "sent": 0, "statuses": {}, "summary": "sent 0", "batches": 0},
    }

    assert tick_markdown("nurture", "2026-11-03T14:30:00+00:00", result) == (
        "# nurture at 2026-11-03T14:30:00+00:00\n"
        "\n"
        "## nurture\n"
        "\n"
        "**sent 5, deferred 2 (send window), bounced 1 (smtp)**\n"
        "\n"
        "| template | sent |\n"
        "|---|---:|\n"
        "| case\\_study | 2 |\n"
        "| welcome | 3 |\n"
        "\n"
        "| deferred because | emails |\n"
        "|---|---:|\n"
        "| send window | 2 |\n"
        "\n"
        "| other outcome | emails |\n"
        "|---|---:|\n"
        "| bounced | 1 |\n"
        "\n"
        "| also | count |\n"
        "|---|---:|\n"
        "| emails that could not be rendered | 1 |\n"
        "\n"
        "## mailbox\n"
        "\n"
        "**read 2 new message(s), bounced 1, replied 1**\n"
        "\n"
        "| message | count |\n"
        "|---|---:|\n"
        "| bounced | 1 |\n"
        "| replied | 1 |\n"
        "\n"
        "| also | count |\n"
        "|---|---:|\n"
        "| messages recorded | 2 |\n"
        "\n"
        "Nothing to do: checkins.\n"
    )


def test_lead_data_in_a_move_is_text_not_markdown() -> None:
    result = {
        "advance": {
            "moves": [{"from": "lead", "to": "prospect", "count": 1, "examples": ["[x](y)@z.io"]}],
            "summary": "moved 1, lead→prospect 1",
        }
    }

    text = tick_markdown("advance", "2026-11-03T14:30:00+00:00", result)

    assert "| lead | prospect | 1 | \\[x\\](y)@z.io |" in text
