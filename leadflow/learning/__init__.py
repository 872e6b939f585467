"""Learning fit rules from won/lost history (issue 19); the result is a proposed config."""
