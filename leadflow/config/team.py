"""The sales team and who gets which lead: the ``team:`` and ``assignment:`` sections.

Structure only, like ``schema.py``: ids, ranges, unknown keys. Which ids exist, time zones and
rules are checked in ``team_checks.py`` with the file's positions.

```yaml
team:
  members:
    - {id: ana, name: Ana Lima, email: ana@acme.example, timezone: America/New_York,
       capacity: 150, daily_cap: 80}
  groups:
    ae: [{member: ana, weight: 2}, ben]   # a plain id has weight 1
assignment:
  - {when: "company_size >= 1000", owner: ana}
  - {group: ae}                                      # no 'when': every lead left
```
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MemberId = Annotated[
    str,
    Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64, description="lower_snake_case id"),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Member(_Strict):
    """One person who works leads."""

    id: MemberId = Field(description="Stable id: leads store it as their owner")
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=320)
    timezone: str = Field(description="IANA time zone of their working day, e.g. Europe/Berlin")
    signature: str | None = Field(default=None, max_length=2000, description="Email signature")
    active: bool = Field(
        default=True,
        description="Inactive members get no new leads; their open leads are reassigned",
    )
    capacity: int | None = Field(
        default=None, ge=1, description="Most open leads at once; full members are skipped"
    )
    daily_cap: int | None = Field(
        default=None, ge=1, description="Emails a day sent as this member (on top of the sender's)"
    )

    @field_validator("email")
    @classmethod
    def _looks_like_email(cls, value: str) -> str:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            raise ValueError(f"'{value}' is not an email address")
        return value


def _id_or_entry(schema: dict[str, Any]) -> None:
    """In the JSON schema too, an entry is a plain id or ``{member, weight}``."""
    entry = dict(schema)
    schema.clear()
    schema["anyOf"] = [{"type": "string", "pattern": r"^[a-z][a-z0-9_]*$"}, entry]


class GroupMember(_Strict):
    """A member's place in a group's round robin: ``weight`` leads for every one of a
    weight-1 member. Written as a plain id, it has weight 1."""

    model_config = ConfigDict(json_schema_extra=_id_or_entry)

    member: MemberId
    weight: int = Field(default=1, ge=1, le=100)

    @model_validator(mode="before")
    @classmethod
    def _plain_id(cls, value: Any) -> Any:
        return {"member": value} if isinstance(value, str) else value


class Team(_Strict):
    members: list[Member] = Field(default_factory=list)
    groups: dict[MemberId, list[GroupMember]] = Field(
        default_factory=dict,
        description="Group id -> its members, each an id (weight 1) or {member, weight}",
    )

    def member(self, member_id: str) -> Member | None:
        return next((m for m in self.members if m.id == member_id), None)

    def group(self, group_id: str) -> list[GroupMember]:
        return self.groups.get(group_id, [])

    @property
    def active_ids(self) -> list[str]:
        return [m.id for m in self.members if m.active]


class AssignmentRule(_Strict):
    """``when`` the rule matches (no ``when``: always), the lead goes to ``owner`` or to the
    next member of ``group``'s weighted round robin."""

    when: str | None = Field(default=None, min_length=1, description="Rule; none: every lead")
    owner: MemberId | None = None
    group: MemberId | None = None
    reason: str | None = Field(default=None, max_length=200, description="Kept in the audit")

    @model_validator(mode="after")
    def _one_target(self) -> AssignmentRule:
        if (self.owner is None) == (self.group is None):
            raise ValueError("an assignment rule needs exactly one of 'owner' or 'group'")
        return self

    @property
    def target(self) -> str:
        return f"owner {self.owner}" if self.owner else f"group {self.group}"
