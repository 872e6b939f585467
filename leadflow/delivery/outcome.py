"""What a delivery did: counted once, merged across batches and steps, summarized once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leadflow.outbox.claimed import ClaimOutcome


@dataclass
class DeliveryOutcome:
    claimed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    deferred: Counter[str] = field(default_factory=Counter)
    cancelled: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0
    render_failed: int = 0
    templates: Counter[str] = field(default_factory=Counter)
    reconciled: list[int] = field(default_factory=list)  # claims a dead run left: now unknown
    batches: int = 0

    def count_claim(self, claim: ClaimOutcome) -> None:
        """Count what a claim took and what it held back (deferred, cancelled, suppressed)."""
        self.claimed += len(claim.claimed)
        self.deferred.update(claim.deferred)
        self.cancelled.update(claim.cancelled)
        self.suppressed += claim.suppressed

    def merge(self, other: DeliveryOutcome) -> None:
        self.reconciled += other.reconciled
        self.batches += other.batches
        self.claimed += other.claimed
        self.statuses.update(other.statuses)
        self.deferred.update(other.deferred)
        self.cancelled.update(other.cancelled)
        self.suppressed += other.suppressed
        self.render_failed += other.render_failed
        self.templates.update(other.templates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "sent": self.statuses.get("sent", 0),
            "statuses": dict(self.statuses),
            "deferred": dict(self.deferred),
            "cancelled": dict(self.cancelled),
            "suppressed": self.suppressed,
            "render_failed": self.render_failed,
            "templates": dict(self.templates),
            "unknown_reconciled": len(self.reconciled),
        }

    def summary(self) -> str:
        parts = [f"sent {self.statuses.get('sent', 0)}"]
        for reason, n in sorted(self.deferred.items()):
            parts.append(f"deferred {n} ({reason})")
        for status in ("deferred", "bounced", "failed", "unknown"):
            if self.statuses.get(status):
                parts.append(f"{status} {self.statuses[status]} (smtp)")
        if self.suppressed:
            parts.append(f"suppressed {self.suppressed}")
        if sum(self.cancelled.values()):
            parts.append(f"cancelled {sum(self.cancelled.values())}")
        if self.reconciled:
            parts.append(f"{len(self.reconciled)} earlier send(s) marked unknown")
        return ", ".join(parts)
