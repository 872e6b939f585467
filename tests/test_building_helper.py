"""The building helper is made from plain values: it is ready sooner (no pydantic, config or
settings code to import) and builds the very bytes the run's own composer builds."""

from __future__ import annotations

import pickle
import subprocess
import sys

from conftest import T0

from leadflow.delivery.compose import ComposeParts, Composer, compose_or_error
from leadflow.outbox.claimed import Claimed
from leadflow.runtime import Runtime


def claimed(n: int, template: str, **lead: object) -> Claimed:
    email = f"lead{n}@d{n % 3}.example"
    return Claimed(
        id=n,
        lead_id=100 + n,
        cadence="outbound",
        step="intro",
        round=0,
        kind="cadence",
        template=template,
        variant=None,
        to_email=email,
        attempts=0,
        lead={
            "email": email,
            "first_name": f"Lead{n}",
            "last_name": "Example",
            "company": f"Company {n} & Sons <Ltd>",
            "industry": "real_estate",
            "country": "US",
            **lead,
        },
    )


def test_the_helper_needs_no_pydantic_config_or_settings_code(rt: Runtime) -> None:
    """What the helper imports, and unpickling the parts it is sent, stays clear of pydantic
    (importing it with the config schema and settings cost the helper ~0.7 s of CPU more
    before it could build the first chunk)."""
    parts = pickle.dumps(Composer.for_run(rt, now=T0).parts())
    heavy = ("pydantic", "pydantic_settings", "leadflow.config.schema", "leadflow.settings")
    probe = (
        "import pickle, sys, leadflow.delivery.helper, leadflow.outbox.claimed\n"
        "parts = pickle.loads(sys.stdin.buffer.read())\n"
        "parts.composer()\n"
        f"print(type(parts).__name__, ','.join(m for m in {heavy!r} if m in sys.modules))"
    )

    loaded = subprocess.run(
        [sys.executable, "-c", probe], input=parts, capture_output=True, check=True
    ).stdout.decode()

    assert loaded.strip() == "ComposeParts"


def test_a_composer_made_from_its_parts_builds_the_same_bytes(rt: Runtime) -> None:
    """Every shipped template, with tracking, labels and lead data that needs escaping, and a
    row whose address cannot be sent to: the same messages or the same error."""
    run = Composer.for_run(rt, now=T0)
    parts = run.parts()
    again = pickle.loads(pickle.dumps(parts))
    assert isinstance(again, ComposeParts) and again == parts
    assert parts.secret not in repr(parts)  # the signing key never reaches a log
    made = again.composer()
    items = [claimed(n, name) for n, name in enumerate(rt.templates.names(), start=1)]
    items.append(claimed(99, "welcome", email="two words@example.com"))
    items[-1] = Claimed(**{**items[-1].__dict__, "to_email": "two words@example.com"})

    built = [compose_or_error(run, item) for item in items]
    rebuilt = [compose_or_error(made, item) for item in items]

    assert len(built) == len(rt.templates.names()) + 1
    assert isinstance(built[-1], str) and built[-1].startswith("render failed:")
    assert all(not isinstance(b, str) for b in built[:-1])
    assert rebuilt == built
    assert (made.now, made.labels, made.tracking.clicks, made.tracking.opens) == (
        T0,
        rt.loaded.config.labels,
        rt.loaded.config.tracking.clicks,
        rt.loaded.config.tracking.opens,
    )
