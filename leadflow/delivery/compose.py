"""One claimed row made ready to send: rendered (sandboxed Jinja), tracked links signed,
built straight to wire bytes.

Pure apart from reading templates, and light to import (no database, no SMTP client, no
pydantic): a helper process builds with the same ``Composer``, made from its ``ComposeParts``
(plain values, so unpickling them imports no config or settings code either).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from leadflow.listening.tracking import rewrite_html
from leadflow.mail.context import (
    NO_LABELS,
    Labels,
    SenderFields,
    lead_context,
    message_context,
    sender_context,
)
from leadflow.mail.message import build_wire, make_message_id
from leadflow.mail.rendering import RenderedEmail, TemplateRenderError, TemplateSet
from leadflow.mail.transport import Outgoing
from leadflow.outbox.claimed import Claimed
from leadflow.unsubscribe import link_for

if TYPE_CHECKING:
    from leadflow.runtime import Runtime


class SigningSettings(Protocol):
    """What building needs of ``leadflow.settings.Settings``."""

    @property
    def public_url(self) -> str: ...
    def require_real_secret(self) -> str: ...


class SenderOptions(SenderFields, Protocol):
    """What building needs of the config's ``sender`` (``config.schema.Sender``)."""

    @property
    def unsubscribe_mailto(self) -> str | None: ...


class TrackingOptions(Protocol):
    """What building needs of the config's ``tracking`` (``config.schema.Tracking``)."""

    @property
    def clicks(self) -> bool: ...
    @property
    def opens(self) -> bool: ...


@dataclass(frozen=True)
class ComposeParts:
    """A ``Composer`` as plain values, what a helper process is sent to make the same one:
    the signing key (already checked) and public URL, the sender, the tracking switches, the
    templates folder, the run's instant and the labels. It stands for the settings, the
    sender and the tracking alike (it has what each protocol asks for)."""

    templates: Path
    now: datetime
    secret: str = field(repr=False)  # the link-signing key: never in a log or traceback
    public_url: str
    from_name: str
    from_email: str
    reply_to: str | None
    company: str | None
    postal_address: str | None
    unsubscribe_mailto: str | None
    clicks: bool
    opens: bool
    labels: Labels

    def require_real_secret(self) -> str:
        return self.secret

    def composer(self) -> Composer:
        """The composer these parts describe, over a new ``TemplateSet`` of the folder."""
        return Composer(
            self, self, self, TemplateSet(self.templates), now=self.now, labels=self.labels
        )


@dataclass(frozen=True)
class Composed:
    """One claimed row made ready to send: the wire bytes plus the headers the outbox records."""

    outgoing: Outgoing
    message_id: str
    subject: str


class Composer:
    """Renders and builds the message of each claimed row of one run (pure, no I/O but
    templates). What is the same for every row (sender, secret, domain) is looked up once.
    ``parts()`` describes it in plain values, so a helper process can make the same one."""

    def __init__(
        self,
        settings: SigningSettings,
        sender: SenderOptions,
        tracking: TrackingOptions,
        templates: TemplateSet,
        *,
        now: datetime,
        labels: Labels = NO_LABELS,
    ) -> None:
        self.settings, self.sender, self.tracking, self.templates = (
            settings,
            sender,
            tracking,
            templates,
        )
        self.now = now
        self.labels = labels
        self._secret = settings.require_real_secret()
        self._public_url = settings.public_url
        self._domain = sender.from_email.rsplit("@", 1)[-1]
        self._sender_context = sender_context(sender)

    def parts(self) -> ComposeParts:
        sender, tracking = self.sender, self.tracking
        return ComposeParts(
            templates=Path(self.templates.directory),
            now=self.now,
            secret=self._secret,
            public_url=self._public_url,
            from_name=sender.from_name,
            from_email=sender.from_email,
            reply_to=sender.reply_to,
            company=sender.company,
            postal_address=sender.postal_address,
            unsubscribe_mailto=sender.unsubscribe_mailto,
            clicks=tracking.clicks,
            opens=tracking.opens,
            labels={field: dict(codes) for field, codes in self.labels.items()},
        )

    @classmethod
    def for_run(cls, rt: Runtime, *, now: datetime) -> Composer:
        config = rt.loaded.config
        return cls(
            rt.settings, config.sender, config.tracking, rt.templates, now=now, labels=config.labels
        )

    def __call__(self, item: Claimed) -> Composed:
        sender = self.sender
        unsubscribe = link_for(self._public_url, item.to_email, self._secret)
        lead = lead_context(item.lead, self.labels)
        context = {
            "lead": lead,
            "sender": dict(self._sender_context),
            "unsubscribe_url": unsubscribe,
            "message": message_context(item.cadence, item.step, item.variant),
        }
        rendered = self.templates.compile(item.template).render(context)
        tracking = self.tracking
        if tracking.clicks or tracking.opens:
            # links and pixel signed for this outbox row; the unsubscribe link stays as it is
            html = rewrite_html(
                rendered.html,
                outbox_id=item.id,
                base_url=self._public_url,
                secret=self._secret,
                clicks=tracking.clicks,
                opens=tracking.opens,
                keep=(unsubscribe,),
            )
            rendered = RenderedEmail(rendered.subject, rendered.text, html)
        message_id = make_message_id(
            f"lf{item.id}.{item.lead_id}.{item.cadence}.{item.step}.{item.round}", self._domain
        )
        wire = build_wire(
            rendered,
            from_name=sender.from_name,
            from_email=sender.from_email,
            reply_to=sender.reply_to,
            to_name=lead["full_name"] or "",
            to_email=item.to_email,
            message_id=message_id,
            date=self.now,
            unsubscribe_url=unsubscribe,
            unsubscribe_mailto=sender.unsubscribe_mailto,
            extra_headers={"X-Leadflow-Cadence": f"{item.cadence}/{item.step}"},
        )
        outgoing = Outgoing(
            key=str(item.id), sender=sender.from_email, recipient=item.to_email, message=wire.data
        )
        return Composed(outgoing, wire.message_id, wire.subject)


def compose_or_error(composer: Composer, item: Claimed) -> Composed | str:
    try:
        return composer(item)
    except (TemplateRenderError, ValueError, KeyError) as exc:
        return f"render failed: {exc}"
