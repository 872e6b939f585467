"""The SMTP transport a run sends through, made from the settings and the sender's rate."""

from __future__ import annotations

from collections.abc import Callable

from leadflow.mail.transport import SmtpConfig, SmtpTransport, Transport, shared_bucket
from leadflow.runtime import Runtime
from leadflow.settings import Settings

TransportFactory = Callable[[], Transport]


def smtp_config(s: Settings, per_minute: int | None = None) -> SmtpConfig:
    """The relay the settings name; ``per_minute`` paces it (None: unpaced)."""
    return SmtpConfig(
        host=s.smtp_host,
        port=s.smtp_port,
        username=s.smtp_username,
        password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        tls=s.smtp_tls,
        timeout=s.smtp_timeout,
        concurrency=s.smtp_concurrency,
        max_per_minute=per_minute,
    )


def smtp_transport_factory(rt: Runtime) -> TransportFactory:
    s = rt.settings

    per_minute = rt.loaded.config.sender.per_minute

    def make() -> Transport:
        return SmtpTransport(
            smtp_config(s, per_minute),
            # one rate for the whole process: batches one after another or side by side
            bucket=shared_bucket(s.smtp_host, s.smtp_port, per_minute) if per_minute else None,
        )

    return make
