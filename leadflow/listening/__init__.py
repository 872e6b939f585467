"""The listening half: mailbox sync and engagement tracking."""
