"""The one error a rule can fail with, raised while reading the text and while checking it."""

from __future__ import annotations


class RuleError(ValueError):
    """A rule that cannot be compiled; ``offset`` is the 0-based character index of the problem."""

    def __init__(self, message: str, offset: int):
        super().__init__(message, offset)
        self.message = message
        self.offset = offset

    def __str__(self) -> str:
        return self.message
