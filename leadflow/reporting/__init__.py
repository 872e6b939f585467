"""Pipeline metrics and reports.

``build.build_report`` asks the database for aggregated rows only (GROUP BY and window
functions, portable across SQLite >= 3.25 and PostgreSQL), so a report over millions of
transitions never loops over leads in Python, and returns a JSON-ready dict. ``tables``
turns that dict into the report's tables, each defined once; ``console`` (rich),
``page`` (a self-contained HTML file) and ``csvexport`` draw those same tables.

What the figures mean (details in each module's docstring):

- Snapshot (leads per stage now, aging, stuck, weighted pipeline, deals at risk): the leads
  as they are now, ages measured at ``until``; the period does not apply.
- Forecast: open deals by expected close month, from stays of all history up to ``until``
  (``sales`` and ``build``; docs/report.md).
- Funnel: the leads created in the period by the furthest stage each reached by ``until``.
- Conversion: entries into a stage made in the period and where each went next by
  ``until`` (next stage, a later stage, back, recycled, lost, or still there).
- Time in stage: completed stays that ended in the period; leads still in a stage are left
  out (their age is in the aging section). Percentiles interpolate between ranks.
- Outcomes: won = ``won_at`` in the period, lost = closed in the period; the sales cycle is
  ``created_at`` -> ``won_at`` of those wins.
- Email: messages that reached SMTP in the period, their events by outbox id up to
  ``until``; first response = hours from a lead's first sent email to its first reply after
  it, for replies in the period.
"""
