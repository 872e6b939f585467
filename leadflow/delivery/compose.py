"""One claimed row made ready to send: rendered (sandboxed Jinja), tracked links signed,
built straight to wire bytes.

Pure apart from reading templates, and light to import (no database, no SMTP client): a
helper process builds with the same ``Composer``, made from the same picklable parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from leadflow.config.schema import Sender, Tracking
from leadflow.listening.tracking import rewrite_html
from leadflow.mail.context import NO_LABELS, Labels, lead_context, message_context, sender_context
from leadflow.mail.message import build_wire, make_message_id
from leadflow.mail.rendering import RenderedEmail, TemplateRenderError, TemplateSet
from leadflow.mail.transport import Outgoing
from leadflow.outbox.claimed import Claimed
from leadflow.settings import Settings
from leadflow.unsubscribe import link_for

if TYPE_CHECKING:
    from leadflow.runtime import Runtime


@dataclass(frozen=True)
class Composed:
    """One claimed row made ready to send: the wire bytes plus the headers the outbox records."""

    outgoing: Outgoing
    message_id: str
    subject: str


class Composer:
    """Renders and builds the message of each claimed row of one run (pure, no I/O but
    templates). What is the same for every row (sender, secret, domain) is looked up once.
    It is made of picklable parts, so a helper process can make the same one."""

    def __init__(
        self,
        settings: Settings,
        sender: Sender,
        tracking: Tracking,
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
