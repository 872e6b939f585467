"""What a claim hands to delivery: the rows this run owns, and what the claim held back.

Plain data with no database import, so a building helper process can receive claimed rows
without importing SQLAlchemy.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Claimed:
    """A row this run owns: everything needed to render and send it, nothing more."""

    id: int
    lead_id: int
    cadence: str
    step: str
    round: int
    kind: str
    template: str
    variant: str | None
    to_email: str
    attempts: int
    lead: dict[str, Any]


@dataclass
class ClaimOutcome:
    claimed: list[Claimed] = field(default_factory=list)
    deferred: Counter[str] = field(default_factory=Counter)
    cancelled: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0
    token: str = ""
    examined: int = 0  # due rows looked at; equal to the claim's limit when more may be due
