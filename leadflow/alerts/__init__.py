"""Alerts: what happened that people must hear about, told once, on the channels the YAML names.

``config`` → ``store`` (an alert is raised once per kind, subject and period; one delivery row
per channel) → ``notify`` (the request or email) → ``store`` again (sent, or failed and
retried). ``guard`` is the sending guard (bounce and complaint rates, the pause); ``sla``
finds the deals their stage SLA flagged; ``steps`` are what the engine's steps and the flow
hooks call. Nothing here imports Prefect: ``flows/pipeline.py`` hooks call ``steps``.
"""
