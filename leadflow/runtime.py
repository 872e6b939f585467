"""Everything one run needs, built once: settings, the database, the validated config.

Opening a runtime validates the config (and templates) before the database is touched, so a
bad file changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from leadflow.business_time import HolidayCalendar, resolve_zone
from leadflow.config import LoadedConfig, load_config
from leadflow.mail.rendering import TemplateSet
from leadflow.settings import Settings
from models.db import open_database


@dataclass
class Runtime:
    settings: Settings
    loaded: LoadedConfig
    engine: Engine
    _zones: dict[str, ZoneInfo] = field(default_factory=dict)

    @classmethod
    def open(
        cls, settings: Settings, *, config_path: Path | None = None, migrate: bool = True
    ) -> Runtime:
        loaded = load_config(config_path or settings.config, templates=settings.templates)
        engine = open_database(settings.db_url, migrate=migrate)
        return cls(settings=settings, loaded=loaded, engine=engine)

    @property
    def config_hash(self) -> str:
        return self.loaded.hash

    @cached_property
    def holidays(self) -> HolidayCalendar:
        spec = self.loaded.config.holidays
        return HolidayCalendar(spec.country, spec.subdivision, spec.extra)

    def zone(self, name: str | None, pipeline_id: str | None = None) -> ZoneInfo:
        """The lead's zone, else its pipeline's, else the config default."""
        key = f"{name}|{pipeline_id}"
        found = self._zones.get(key)
        if found is None:
            pipeline = self.loaded.config.pipeline(pipeline_id) if pipeline_id else None
            default = (pipeline.timezone if pipeline else None) or self.loaded.config.timezone
            found = resolve_zone(name, default)
            self._zones[key] = found
        return found

    @cached_property
    def stop_on(self) -> dict[str, frozenset[str]]:
        return {cid: frozenset(c.stop_on) for cid, c in self.loaded.config.cadences.items()}

    @cached_property
    def templates(self) -> TemplateSet:
        """Compiled once per runtime (per flow run), not per email."""
        return TemplateSet(self.settings.templates)

    def close(self) -> None:
        self.engine.dispose()
