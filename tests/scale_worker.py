"""One delivery worker process for the scale-out tests: drains the due outbox, prints a JSON
line with how many messages it claimed and sent. Arguments: db_url config templates smtp_port
now_iso batch_size."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from leadflow.delivery.session import deliver_batch
from leadflow.delivery.smtp import smtp_transport_factory
from leadflow.pipeline import engine
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from leadflow.timeutil import parse_instant


def main() -> None:
    db_url, config, templates, port, now_iso, batch = sys.argv[1:7]
    settings = Settings(
        database_url=db_url,
        config=Path(config),
        templates=Path(templates),
        smtp_port=int(port),
        demo=True,
        batch_size=int(batch),
    )
    rt = Runtime.open(settings)
    now = parse_instant(now_iso)
    claimed = sent = 0
    while True:
        ranges = engine.outbox_ranges(rt, now=now, kind="cadence")
        if not ranges:
            break
        progress = 0
        for id_range in ranges:
            outcome = deliver_batch(
                rt, id_range, now=now, kind="cadence", transport=smtp_transport_factory(rt)
            )
            claimed += outcome.claimed
            sent += outcome.statuses.get("sent", 0)
            progress += outcome.claimed
        if progress == 0:
            break  # everything left is claimed by other workers
    print(json.dumps({"claimed": claimed, "sent": sent}))


if __name__ == "__main__":
    main()
