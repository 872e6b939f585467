"""The ``alerts:`` section: named channels, which events go to which channels, the sending guard.

A channel's URL is a secret (a Slack or webhook URL lets anybody post): the YAML names the
environment variable that holds it (``url_env``), never the URL. Whether that variable is set
is a warning when the file is validated (``leadflow validate`` in CI has no production
secrets) and an error on the delivery that needs it (``leadflow/alerts/notify.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from leadflow.config.source import Issue, YamlDocument
from leadflow.suggest import did_you_mean

# Events alerts can be sent for; ``tasks_overdue`` and the per-owner digest come with tasks
# and owners (issue 18), which are not built yet.
ALERT_EVENTS: tuple[str, ...] = ("flow_failed", "sla_flagged", "sending_guard")
LATER_EVENTS: dict[str, str] = {
    "tasks_overdue": "tasks are not built yet",
    "daily_digest": "the per-owner digest needs owners, which are not built yet",
}
_ENV_NAME = r"^[A-Z][A-Z0-9_]*$"
ChannelId = Annotated[
    str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64, description="lower_snake_case id")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _UrlChannel(_Strict):
    url_env: str = Field(
        max_length=128,
        description="Environment variable holding the URL (never the URL itself)",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=60, description="Per request")

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not re.fullmatch(_ENV_NAME, value):
            raise ValueError(
                f"url_env names an environment variable such as LEADFLOW_ALERT_WEBHOOK, "
                f"not '{value[:40]}' (a URL is a secret: keep it out of this file)"
            )
        return value


class WebhookChannel(_UrlChannel):
    """A JSON POST to any URL (``leadflow/alerts/notify.py`` documents the body)."""

    type: Literal["webhook"]


class SlackChannel(_UrlChannel):
    """A Slack incoming webhook (``{"text": ...}``)."""

    type: Literal["slack"]


class EmailChannel(_Strict):
    """An email through the project's SMTP settings, from the YAML sender."""

    type: Literal["email"]
    to: list[str] = Field(min_length=1, max_length=50, description="Recipient addresses")
    subject_prefix: str = Field(default="[leadflow]", max_length=60)

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
                raise ValueError(f"'{address}' is not an email address")
        return value


Channel = Annotated[WebhookChannel | SlackChannel | EmailChannel, Field(discriminator="type")]


class SendingGuard(_Strict):
    """Pause all sending when the recent bounce or complaint rate is above its limit (the
    Gmail and Yahoo bulk-sender rules); ``leadflow sending resume --reason`` lifts it."""

    enabled: bool = True
    last_sends: int = Field(default=500, ge=10, le=100_000, description="Sends judged")
    min_sends: int = Field(default=100, ge=1, description="Fewer sends than this: no verdict")
    max_bounce_percent: float = Field(default=5.0, gt=0, le=100)
    max_complaint_percent: float = Field(default=0.3, gt=0, le=100)

    @model_validator(mode="after")
    def _enough(self) -> SendingGuard:
        if self.min_sends > self.last_sends:
            raise ValueError(
                f"min_sends ({self.min_sends}) must not exceed last_sends ({self.last_sends})"
            )
        return self


class Alerts(_Strict):
    channels: dict[ChannelId, Channel] = Field(default_factory=dict)
    events: dict[str, list[ChannelId]] = Field(
        default_factory=dict, description="Event -> the channels it is sent to"
    )
    sending_guard: SendingGuard = Field(default_factory=SendingGuard)

    def routes(self, event: str) -> list[str]:
        return list(self.events.get(event, []))


def alert_issues(
    doc: YamlDocument, alerts: Alerts | None, environ: Mapping[str, str] | None = None
) -> list[Issue]:
    """Unknown events (did you mean), channels used but not defined (errors); channels never
    used, URL variables unset in this environment (warnings)."""
    if alerts is None:
        return []
    env = os.environ if environ is None else environ
    issues: list[Issue] = []
    used: set[str] = set()
    for event, names in alerts.events.items():
        if event in LATER_EVENTS:
            issues.append(
                doc.issue(
                    ("alerts", "events", event),
                    f"'{event}' alerts are not available yet: {LATER_EVENTS[event]}",
                    key=True,
                )
            )
        elif event not in ALERT_EVENTS:
            issues.append(
                doc.issue(
                    ("alerts", "events", event),
                    f"unknown alert event '{event}'{did_you_mean(event, ALERT_EVENTS)}; "
                    f"known: {', '.join(ALERT_EVENTS)}",
                    key=True,
                )
            )
        for index, name in enumerate(names):
            used.add(name)
            if name not in alerts.channels:
                issues.append(
                    doc.issue(
                        ("alerts", "events", event, index),
                        f"channel '{name}' is not defined under alerts.channels"
                        f"{did_you_mean(name, alerts.channels)}",
                    )
                )
    for name, channel in alerts.channels.items():
        if name not in used:
            issues.append(
                doc.issue(
                    ("alerts", "channels", name),
                    f"channel '{name}' is defined but no event is sent to it",
                    key=True,
                    severity="warning",
                )
            )
        elif not isinstance(channel, EmailChannel) and not env.get(channel.url_env):
            issues.append(
                doc.issue(
                    ("alerts", "channels", name, "url_env"),
                    f"{channel.url_env} is not set in this environment: alerts to '{name}' "
                    "fail unless it is set where the flows run",
                    severity="warning",
                )
            )
    return issues
