"""Process settings from the environment (``LEADFLOW_*``): where the data lives, how to reach SMTP.

Secrets never live in ``pipeline.yaml``; they come from here. The placeholder secret key is
accepted only in demo mode, so a production deployment cannot sign unsubscribe links with a
key everybody knows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from leadflow.eventloop import uvloop_installed

PLACEHOLDER_SECRET = "change-me-demo-only"  # noqa: S105 - the documented placeholder
TEMPLATES_FOLDER = Path("templates/email")


def templates_folder(config: Path, given: Path | None) -> Path:
    """Where the email templates are, wherever the command runs from.

    ``LEADFLOW_TEMPLATES`` (``given``) is read from the config file's folder when relative.
    Unset, the templates are the first of these folders that exists: ``templates/email``
    next to the config file, beside the config file's folder (the shipped layout,
    ``config/pipeline.yaml`` and ``templates/email``), or in the working directory.
    The result is absolute, so settings validated again (a copy handed to a flow) keep it.
    """
    folder = config.absolute().parent
    if given is not None:
        return given if given.is_absolute() else folder / given
    candidates = (folder / TEMPLATES_FOLDER, folder.parent / TEMPLATES_FOLDER, TEMPLATES_FOLDER)
    return next((c for c in candidates if c.is_dir()), TEMPLATES_FOLDER).absolute()


class SettingsError(ValueError):
    """A setting is missing or unsafe; the message names the environment variable."""


class Settings(BaseSettings):
    """All knobs of a leadflow process; read once at start-up, passed explicitly afterwards."""

    model_config = SettingsConfigDict(env_prefix="LEADFLOW_", extra="ignore")

    home: Path = Field(default=Path("var"), description="Working folder for the SQLite file etc.")
    database_url: str | None = None
    config: Path = Path("config/pipeline.yaml")
    # Relative: read from the config file's folder (see templates_folder).
    templates: Path = TEMPLATES_FOLDER
    inbox: Path | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_timeout: float = 30.0
    smtp_concurrency: int = Field(default=4, ge=1, le=64)
    secret_key: SecretStr = SecretStr(PLACEHOLDER_SECRET)
    public_url: str = "http://127.0.0.1:8000"
    api_token: SecretStr | None = None
    # Where replies, auto-replies and bounces arrive (docs/mailbox.md): imaps://user@host/INBOX,
    # imap://user@host/INBOX (STARTTLS), imap+plain:// (loopback only), or maildir:///path.
    # Unset: no mailbox is read.
    mailbox_url: str | None = None
    mailbox_password: SecretStr | None = None
    # The largest request body ``leadflow web`` reads (POST /leads, POST /events): larger is 413.
    max_body_bytes: int = Field(default=1_000_000, ge=1_000, le=100_000_000)
    demo: bool = False
    batch_size: int = Field(default=2000, ge=1, le=100_000)
    # The loop SMTP conversations run on (see leadflow.eventloop): "auto" is uvloop
    # where it is installed, asyncio's own loop otherwise.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"

    @field_validator("event_loop")
    @classmethod
    def _loop_available(cls, value: str) -> str:
        if value == "uvloop" and not uvloop_installed():
            raise ValueError(
                "LEADFLOW_EVENT_LOOP=uvloop, but uvloop is not installed "
                "(pip install uvloop; or use auto or asyncio)"
            )
        return value

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.home / 'leadflow.db'}"
        if self.inbox is None:
            self.inbox = self.home / "inbox"
        given = self.templates if "templates" in self.model_fields_set else None
        self.templates = templates_folder(self.config, given)
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'leadflow.db'}"

    @property
    def inbox_dir(self) -> Path:
        return self.inbox or self.home / "inbox"

    def require_real_secret(self) -> str:
        """The signing key, refusing the placeholder outside demo mode."""
        value = self.secret_key.get_secret_value()
        if value == PLACEHOLDER_SECRET and not self.demo:
            raise SettingsError(
                "LEADFLOW_SECRET_KEY is the demo placeholder; set a random secret "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        if len(value) < 16:
            raise SettingsError("LEADFLOW_SECRET_KEY must be at least 16 characters long")
        return value


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; keyword overrides win (used by the CLI and tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]
