"""Everything one run needs, built once: settings, the database, the validated config.

Opening a runtime validates the config (and templates) before the database is touched, so a
bad file changes nothing. The engine's modules (SQLAlchemy, the validator, templates,
holidays) are imported when a runtime is opened, not when this module is: every command of
the CLI names ``Runtime``, and ``leadflow --help`` or ``leadflow run`` must not wait for them
before it can start anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from leadflow.settings import Settings

if TYPE_CHECKING:  # imported where used: ``import leadflow.runtime`` stays light for the CLI
    from sqlalchemy import Engine

    from leadflow.config import LoadedConfig
    from leadflow.mail.rendering import TemplateSet
    from leadflow.pipeline.business_time import HolidayCalendar, SendWindow


@dataclass
class Runtime:
    settings: Settings
    loaded: LoadedConfig
    engine: Engine
    _zones: dict[str, ZoneInfo] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        config_path: Path | None = None,
        migrate: bool = True,
        check_templates: bool = True,
    ) -> Runtime:
        """``check_templates=False`` validates the config without its templates (``leadflow
        studio``: a broken template is what it is there to show, not a reason to refuse)."""
        from leadflow.config import load_config
        from models.db import open_database

        templates = settings.templates if check_templates else None
        loaded = load_config(config_path or settings.config, templates=templates)
        if settings.db_url == f"sqlite:///{settings.home / 'leadflow.db'}":
            settings.home.mkdir(parents=True, exist_ok=True)  # the default place: ours to make
        engine = open_database(settings.db_url, migrate=migrate)
        return cls(settings=settings, loaded=loaded, engine=engine)

    @property
    def config_hash(self) -> str:
        return self.loaded.hash

    @cached_property
    def holidays(self) -> HolidayCalendar:
        from leadflow.pipeline.business_time import HolidayCalendar

        spec = self.loaded.config.holidays
        return HolidayCalendar(spec.country, spec.subdivision, spec.extra)

    def zone(self, name: str | None, pipeline_id: str | None = None) -> ZoneInfo:
        """The lead's zone, else its pipeline's, else the config default."""
        key = f"{name}|{pipeline_id}"
        found = self._zones.get(key)
        if found is None:
            from leadflow.pipeline.business_time import resolve_zone

            pipeline = self.loaded.config.pipeline(pipeline_id) if pipeline_id else None
            default = (pipeline.timezone if pipeline else None) or self.loaded.config.timezone
            found = resolve_zone(name, default)
            self._zones[key] = found
        return found

    def send_zone(
        self, cadence_id: str | None, lead_zone: str | None, pipeline_id: str | None
    ) -> ZoneInfo:
        """The zone a cadence's send window is read in: the lead's (default) or, with
        ``window.timezone: pipeline``, the pipeline's."""
        cadence = self.loaded.config.cadences.get(cadence_id or "")
        if cadence is not None and cadence.window.timezone == "pipeline":
            return self.zone(None, pipeline_id)
        return self.zone(lead_zone, pipeline_id)

    @cached_property
    def send_windows(self) -> dict[str, SendWindow]:
        """Each cadence's send window, worked out once per runtime (claims and records ask
        for it per message)."""
        from leadflow.pipeline.cadence import window_of

        return {cid: window_of(c.window) for cid, c in self.loaded.config.cadences.items()}

    @cached_property
    def stop_on(self) -> dict[str, frozenset[str]]:
        return {cid: frozenset(c.stop_on) for cid, c in self.loaded.config.cadences.items()}

    @cached_property
    def templates(self) -> TemplateSet:
        """Compiled once per runtime (per flow run), not per email."""
        from leadflow.mail.rendering import TemplateSet

        return TemplateSet(self.settings.templates)

    def close(self) -> None:
        self.engine.dispose()
