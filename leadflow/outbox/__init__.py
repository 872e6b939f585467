"""The outbox: one row per message to send, and its state machine.

Promises (see docs/delivery.md):
* at most one email per (lead, cadence, step, round): the unique constraint makes a second
  row impossible, and a row is claimed (``pending|deferred -> sending``) in a committed
  transaction before any SMTP call, so a crashed or overlapping run can never send it again;
* suppression always wins: the claim itself refuses rows whose address is suppressed, so an
  unsubscribe committed a millisecond before the claim is honoured;
* every message ends in a known state: rows left in ``sending`` by a crash become
  ``unknown`` after ``CLAIM_TTL`` and are reported, never resent automatically.

Modules: ``rows`` (a new row, made in one place), ``claim`` (who is due, what each due row
becomes, the claim itself), ``caps`` (the daily caps a claim enforces), ``claimed`` (what a
claim hands to delivery: plain data), ``record`` (what SMTP said, retries, the next cadence
step), ``reconcile`` (stale claims become ``unknown``; unsent claims are given back).
Submodules are imported by name; this package imports nothing, so importing
``leadflow.outbox.claimed`` stays light.
"""
