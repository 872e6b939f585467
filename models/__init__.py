"""Database tables and access for leadflow (no Prefect here)."""

from models.tables import (
    OPEN_MESSAGE_STATES,
    Callback,
    Event,
    Lead,
    LeadBase,
    LeadCreate,
    LeadPublic,
    LeadStatus,
    MessageStatus,
    OutboundMessage,
    RunRecord,
    ScoreChange,
    StageTransition,
    Suppression,
)

__all__ = [
    "OPEN_MESSAGE_STATES",
    "Callback",
    "Event",
    "Lead",
    "LeadBase",
    "LeadCreate",
    "LeadPublic",
    "LeadStatus",
    "MessageStatus",
    "OutboundMessage",
    "RunRecord",
    "ScoreChange",
    "StageTransition",
    "Suppression",
]
