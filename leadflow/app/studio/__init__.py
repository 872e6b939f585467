"""``leadflow studio``: the marketer's loop, a local web page over the templates folder.

One process keeps everything warm (``model``: config, database, templates); a watcher
(``watcher``) replaces the templates when a file changes and the page, told by Server-Sent
Events, asks for a new render, which costs milliseconds. ``send_limit`` caps test sends,
``guard`` decides which Host and Origin the studio answers, ``app`` is the web app, ``page``
its HTML, script and style, and ``server`` runs it under uvicorn.
"""

from __future__ import annotations

from leadflow.app.studio.app import create_studio_app
from leadflow.app.studio.guard import allowed_hosts, check_host_name, is_loopback, origin_allowed
from leadflow.app.studio.model import Problem, Studio, StudioError
from leadflow.app.studio.send_limit import SendLimit
from leadflow.app.studio.server import serve_studio
from leadflow.app.studio.watcher import FolderWatcher, folder_state

__all__ = [
    "FolderWatcher",
    "Problem",
    "SendLimit",
    "Studio",
    "StudioError",
    "allowed_hosts",
    "check_host_name",
    "create_studio_app",
    "folder_state",
    "is_loopback",
    "origin_allowed",
    "serve_studio",
]
