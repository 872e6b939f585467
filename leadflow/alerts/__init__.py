"""Alerts: what happened that people must hear about, told once, on the channels the YAML names.

``config`` → ``store`` (an alert is raised once per kind, subject and period; one delivery row
per channel) → ``notify`` (the request or email) → ``store`` again (sent, or failed and
retried). ``guard`` is the sending guard (bounce and complaint rates, the pause); ``sla``
finds the deals their stage SLA flagged; ``steps`` are what the engine's steps call;
``outlet`` delivers what is due and raises a failed flow run's alert. Nothing here imports
Prefect: the hooks in ``flows/pipeline.py`` call ``outlet.flow_failed``.
"""
