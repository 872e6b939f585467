"""Run the sending half of a tick in a process of its own, so a test can kill it or race it.

``python tests/crash_sender.py DB_URL SMTP_PORT NOW [--batch-size N] [--concurrency N]
[--ready PATH --go PATH]`` delivers every due cadence message of the database over SMTP on
127.0.0.1 through the tick's own nurture step (``engine.run(rt, "nurture", ...)``), and
prints its ``DeliveryOutcome`` as one JSON line. With ``--ready``/``--go`` it creates the ready
file once everything is imported and opened, then waits for the go file:
the caller starts several senders at the same instant that way.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from waiting import wait_until

from leadflow.delivery.outcome import DeliveryOutcome
from leadflow.delivery.smtp import smtp_transport_factory
from leadflow.pipeline import engine as pipeline
from leadflow.runtime import Runtime
from leadflow.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "pipeline.yaml"
TEMPLATES = ROOT / "templates" / "email"


def deliver_all(rt: Runtime, *, now: datetime) -> DeliveryOutcome:
    """The nurture step exactly as a tick and the ``nurture`` flow run it (``engine.run``)."""
    runner = pipeline.InlineRunner(rt, smtp_transport_factory(rt))
    return pipeline.run(rt, "nurture", now=now, runner=runner).nurture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("database_url")
    parser.add_argument("smtp_port", type=int)
    parser.add_argument("now", type=datetime.fromisoformat)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--ready", type=Path)
    parser.add_argument("--go", type=Path)
    args = parser.parse_args(argv)
    now: datetime = args.now
    if now.utcoffset() != timedelta(0):
        parser.error("NOW must be a UTC instant, e.g. 2026-11-03T14:30:00+00:00")
    settings = Settings(
        database_url=args.database_url,
        config=CONFIG,
        templates=TEMPLATES,
        demo=True,
        smtp_host="127.0.0.1",
        smtp_port=args.smtp_port,
        smtp_concurrency=args.concurrency,
        batch_size=args.batch_size,
    )
    rt = Runtime.open(settings, migrate=False)
    try:
        rt.templates.compile("welcome")  # warm up before the start line
        if args.ready is not None:
            args.ready.touch()
        if args.go is not None:
            wait_until(args.go.exists, timeout=60, what=f"the go file {args.go}")
        outcome: dict[str, Any] = deliver_all(rt, now=now).as_dict()
    finally:
        rt.close()
    print(json.dumps(outcome, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
