"""Prefect flows and deployments: the only package that imports prefect.

Prefect settings that must be in place before prefect is imported are defaulted here:
no telemetry (the network is closed), a generous start-up timeout for the temporary server,
a project-local PREFECT_HOME so `make ui` shows the runs of `make demo`, and run logs that
reach the UI while the console stays quiet.
"""

import os
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_HOME", str(Path("var/prefect").resolve()))
# Prefect creates its home but not the folders above it: on a fresh clone var/ is missing.
try:
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
except OSError as _exc:
    raise SystemExit(
        f"error: PREFECT_HOME {os.environ['PREFECT_HOME']}: cannot create it ({_exc.strerror}); "
        "set PREFECT_HOME to a folder this user can write"
    ) from None
# Logs: every flow and task run logs at INFO to the API (the run's page in the UI shows its
# summary line and Prefect's own state changes), while the console stays quiet: its handler
# prints warnings and errors only, or whatever PREFECT_LOGGING_LEVEL asks for. Prefect reads
# PREFECT_LOGGING_<path in its logging.yml> when it is imported; served runs inherit these.
os.environ.setdefault(
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING")
)
os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "INFO")
os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "INFO")
