"""The runtime that task runs share within one process.

Engines, sessions and SMTP clients are never task arguments (they are not data and would be
hashed for cache keys); tasks look the runtime up here, and only small values — an id
range, an ISO timestamp — cross task boundaries.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from leadflow.runtime import Runtime
from leadflow.settings import Settings, load_settings

_lock = threading.Lock()
_current: Runtime | None = None
_settings: Settings | None = None


def use_settings(settings: Settings) -> None:
    """Make the next ``runtime()`` call use these settings (the CLI and demo call this)."""
    global _settings, _current
    with _lock:
        if _current is not None and _settings is not settings:
            _current.close()
            _current = None
        _settings = settings


def current_settings() -> Settings:
    """The settings this process runs with: the ones ``use_settings`` set (the CLI's
    ``--config``, another database), else those of the environment (``load_settings``)."""
    with _lock:
        return _settings if _settings is not None else load_settings()


def runtime() -> Runtime:
    """The process's runtime, opened (config validated, migrations applied) on first use."""
    global _current, _settings
    with _lock:
        if _current is None:
            if _settings is None:
                _settings = load_settings()
            _current = Runtime.open(_settings)
        return _current


def _fingerprint(settings: Settings) -> str:
    """Changes whenever the config or any template file changes."""
    digest = hashlib.sha256()
    for path in [settings.config, *sorted(Path(settings.templates).glob("*"))]:
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


_loaded_fingerprint: str | None = None


def reload() -> Runtime:
    """Each flow run starts with the files as they are now: re-validated when they changed."""
    global _current, _loaded_fingerprint
    with _lock:
        settings = _settings or load_settings()
        fingerprint = _fingerprint(settings)
        if _current is not None and fingerprint != _loaded_fingerprint:
            _current.close()
            _current = None
        _loaded_fingerprint = fingerprint
    return runtime()
