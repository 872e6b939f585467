"""The outbox: one row per message to send, and its state machine (see ``policy``).

Submodules are imported by name; this package imports nothing, so importing
``leadflow.outbox.claimed`` (plain data) stays light.
"""
