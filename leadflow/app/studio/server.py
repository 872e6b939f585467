"""Running the studio: its app under uvicorn until Ctrl-C or SIGTERM, a stop that ends the
open event streams first and exits cleanly."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from leadflow.app.studio.app import create_studio_app
from leadflow.app.studio.guard import allowed_hosts
from leadflow.app.studio.model import Studio


def serve_studio(studio: Studio, *, host: str, port: int, allow_hosts: Iterable[str] = ()) -> None:
    """Serve the studio until Ctrl-C or SIGTERM, then return; open pages' event streams end
    first, so the server stops at once and cleanly."""
    import uvicorn

    class StudioServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            studio.closed = True  # ends every /events stream within EVENT_POLL_SECONDS
            super().handle_exit(sig, frame)
            # A stop the user asked for is a clean exit (0): uvicorn would raise the signal
            # again once stopped (death by SIGTERM, or KeyboardInterrupt and "Aborted!").
            self._captured_signals.clear()

    app = create_studio_app(studio, hosts=allowed_hosts(host, allow_hosts), port=port)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    StudioServer(config).run()
