"""``leadflow preview`` and ``send-test``: marketing sees an email before a lead does.

``leadflow studio`` (app/studio/) renders and sends through the same functions."""

from __future__ import annotations

from datetime import UTC, datetime

from leadflow.delivery.smtp import smtp_transport_factory
from leadflow.eventloop import run_async
from leadflow.intake.values import InvalidValue, normalize_email
from leadflow.mail.context import lead_context, sender_context
from leadflow.mail.message import build_wire, make_message_id
from leadflow.mail.rendering import RenderedEmail, sample_context
from leadflow.mail.transport import Outgoing, SendResult
from leadflow.queries import find_lead, row_dict
from leadflow.runtime import Runtime
from leadflow.unsubscribe import link_for

TEST_UNSUBSCRIBE_URL = "https://example.invalid/unsubscribe/test"
"""What a test send carries instead of a signed link, in its body and its List-Unsubscribe
header alike: a test may go to anyone, so it never carries a lead's working link."""


def preview_context(rt: Runtime, lead_email: str | None) -> dict[str, object]:
    """What a template sees in a preview: the sample lead (the one validate renders) with the
    config's sender, or the lead ``lead_email`` from the database (ValueError if none)."""
    config = rt.loaded.config
    context = sample_context(attribute_keys=list(config.intake.attributes), labels=config.labels)
    context["sender"] = sender_context(config.sender)
    if lead_email is not None:
        with rt.engine.connect() as conn:
            row = find_lead(conn, lead_email)
        if row is None:
            raise ValueError(f"no lead with email '{lead_email}'")
        context["lead"] = lead_context(row_dict(row), config.labels)
        secret = rt.settings.secret_key.get_secret_value()
        context["unsubscribe_url"] = link_for(rt.settings.public_url, row.email, secret)
    return context


def context_for_test_send(rt: Runtime, lead_email: str | None) -> dict[str, object]:
    """``preview_context`` for a test send: the lead's data (the marketer wants to see it) but
    every signed link (the unsubscribe link; the context has no other) is the placeholder
    ``TEST_UNSUBSCRIBE_URL``, so whoever receives the test cannot act for the lead."""
    context = preview_context(rt, lead_email)
    context["unsubscribe_url"] = TEST_UNSUBSCRIBE_URL
    return context


def render_preview(rt: Runtime, template: str, *, lead_email: str | None) -> RenderedEmail:
    return rt.templates.compile(template).render(preview_context(rt, lead_email))


def check_test_address(to: str, *, label: str = "--to") -> None:
    """Refuse anything but one email address as a test's recipient (ValueError)."""
    if any(ch in to for ch in "\r\n,;"):
        raise ValueError(f"{label} takes one email address (no line breaks, commas or semicolons)")
    try:
        normalize_email(to)
    except InvalidValue as exc:
        raise ValueError(f"{label}: {to!r} is not an email address ({exc})") from None


def send_test_email(
    rt: Runtime, template: str, to: str, *, rendered: RenderedEmail | None = None
) -> SendResult:
    """Send ``rendered`` (else ``template`` rendered with sample data) to ``to`` with the
    pipeline's message builder and SMTP settings, marked ``X-Leadflow-Test``; ``rendered``
    must come from ``context_for_test_send`` (no signed link)."""
    if rendered is None:
        rendered = rt.templates.compile(template).render(context_for_test_send(rt, None))
    sender = rt.loaded.config.sender
    now = datetime.now(UTC)
    domain = sender.from_email.rsplit("@", 1)[-1]
    message = build_wire(
        rendered,
        from_name=sender.from_name,
        from_email=sender.from_email,
        reply_to=sender.reply_to,
        to_name="",
        to_email=to,
        message_id=make_message_id(f"test.{template}.{int(now.timestamp())}", domain),
        date=now,
        unsubscribe_url=TEST_UNSUBSCRIBE_URL,
        unsubscribe_mailto=sender.unsubscribe_mailto,
        extra_headers={"X-Leadflow-Test": "1"},
    )
    outgoing = Outgoing(key="test", sender=sender.from_email, recipient=to, message=message.data)

    async def go() -> SendResult:
        async with smtp_transport_factory(rt)() as transport:
            return (await transport.send_batch([outgoing]))[0]

    return run_async(go(), rt.settings.event_loop)
