"""Mailbox sync against the real Dovecot server: the corpus, checkpoints, exactly-once.

Every test works in an IMAP folder of its own (``imap_folder``). The corpus under
``tests/fixtures/mail/`` is appended with IMAP APPEND and read back through the same sync that
the ``mailbox`` flow and ``tick`` run; ``expected.csv`` says what each message must become.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DEFAULT_CONFIG, TEMPLATES, database_url
from imap_server import ImapAccount, append, flags_of, new_folder, recreate_folder
from sqlalchemy import func, insert, select
from waiting import poll_until

from leadflow.config import load_config
from leadflow.listening.classify import Kind, classify, parse
from leadflow.listening.sync import sync_mailbox
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.tables import EVENTS, INBOUND, LEADS, MAILBOX_CHECKPOINTS, OUTBOX, SUPPRESSIONS

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "mail"
NOW = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
EXPECTED = list(csv.DictReader((CORPUS / "expected.csv").read_text("utf-8").splitlines()))


def mailbox_url(account: ImapAccount, folder: str) -> str:
    return f"imap+plain://{account.user}@{account.host}:{account.port}/{folder}"


def listening_runtime(
    home: Path, database: str, mailbox: str, *, config: Path = DEFAULT_CONFIG, **settings: Any
) -> Runtime:
    """Demo mode with the shipped templates, syncing ``mailbox``: every runtime of this file."""
    return Runtime.open(
        Settings(
            home=home,
            database_url=database,
            config=config,
            templates=TEMPLATES,
            demo=True,
            mailbox_url=mailbox,
            **settings,
        )
    )


def runtime_for(
    tmp_path: Path, account: ImapAccount, folder: str, config: Path = DEFAULT_CONFIG
) -> Runtime:
    url = mailbox_url(account, folder)
    return listening_runtime(
        tmp_path, database_url(tmp_path), url, config=config, mailbox_password=account.password
    )


def seed_corpus_leads(rt: Runtime) -> dict[str, int]:
    """A lead for every address expected.csv names, and an outbox row for every Message-ID of
    ours it expects a message to answer (``<lf{row}.{lead}...>`` names the row's id)."""
    emails = sorted({row["lead"] for row in EXPECTED if row["lead"]})
    ids: dict[str, int] = {}
    with rt.engine.begin() as conn:
        for email in emails:
            ids[email] = conn.execute(
                insert(LEADS)
                .values(email=email, attributes={}, created_at=NOW, updated_at=NOW)
                .returning(LEADS.c.id)
            ).scalar_one()
        answered = {(row["answers"], row["lead"]) for row in EXPECTED if row["answers"]}
        for message_id, email in sorted(answered):
            outbox_id = int(message_id.split(".", 1)[0].removeprefix("<lf"))
            conn.execute(
                insert(OUTBOX).values(
                    id=outbox_id,
                    lead_id=ids[email],
                    cadence="outbound",
                    step=f"s{outbox_id}",
                    to_email=email,
                    message_id=message_id,
                    status="sent",
                    due_at=NOW - timedelta(days=3),
                    sent_at=NOW - timedelta(days=3),
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
    return ids


def corpus_bytes() -> list[bytes]:
    return [(CORPUS / row["file"]).read_bytes() for row in EXPECTED]


# --- the corpus -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_synced(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Runtime, dict[str, Any], Any]]:
    """The whole corpus appended to one folder and synced once; tests read the outcome."""
    from imap_server import account_from_env

    account = account_from_env()
    folder = new_folder(account)
    append(account, folder, corpus_bytes())
    rt = runtime_for(tmp_path_factory.mktemp("corpus"), account, folder)
    seed_corpus_leads(rt)
    outcome = sync_mailbox(rt, now=NOW)
    with rt.engine.connect() as conn:
        rows = {r.uid: r for r in conn.execute(select(INBOUND))}
        emails = dict(conn.execute(select(LEADS.c.id, LEADS.c.email)).all())
    yield rt, {"rows": rows, "emails": emails, "account": account, "folder": folder}, outcome
    rt.close()


def test_the_corpus_has_every_class_the_issue_names() -> None:
    counts: dict[str, int] = {}
    for row in EXPECTED:
        counts[row["class"]] = counts.get(row["class"], 0) + 1
    assert len(EXPECTED) >= 30
    assert set(counts) == {str(k) for k in Kind}
    assert sorted(p.name for p in CORPUS.glob("*.eml")) == sorted(r["file"] for r in EXPECTED)


@pytest.mark.parametrize("row", EXPECTED, ids=[r["file"] for r in EXPECTED])
def test_each_corpus_message_gets_its_class_lead_and_evidence(
    corpus_synced: tuple[Runtime, dict[str, Any], Any], row: dict[str, str]
) -> None:
    _rt, found, _outcome = corpus_synced
    uid = EXPECTED.index(row) + 1  # appended in order to a new folder: UIDs 1, 2, 3, ...
    stored = found["rows"][uid]
    assert stored.kind == row["class"]
    assert found["emails"].get(stored.lead_id, "") == row["lead"]
    if row["answers"]:
        assert stored.matched_by in ("thread", "dsn")
        assert stored.outbox_id == int(row["answers"].split(".", 1)[0].removeprefix("<lf"))
    if row["status"]:
        assert stored.evidence["status"] == row["status"]
    if row["class"] == "out_of_office":
        assert stored.evidence.get("return_date", "") == row["return_date"]
    assert stored.evidence["rule"]


def test_replies_are_stored_without_quoted_text_or_signature(
    corpus_synced: tuple[Runtime, dict[str, Any], Any],
) -> None:
    _rt, found, _outcome = corpus_synced
    replies = [r for r in found["rows"].values() if r.kind == "replied"]
    assert replies
    for reply in replies:
        snippet = reply.snippet or ""
        assert "wrote:" not in snippet
        assert "Original Message" not in snippet
        assert not snippet.startswith(">")
        assert "Unsubscribe:" not in snippet  # our own footer, quoted below the reply


def test_corpus_events_suppress_bounced_and_unsubscribed_addresses(
    corpus_synced: tuple[Runtime, dict[str, Any], Any],
) -> None:
    rt, _found, outcome = corpus_synced
    with rt.engine.connect() as conn:
        suppressed = dict(conn.execute(select(SUPPRESSIONS.c.email, SUPPRESSIONS.c.reason)).all())
        events = conn.execute(select(EVENTS.c.type, func.count()).group_by(EVENTS.c.type)).all()
    hard = {r["lead"] for r in EXPECTED if r["class"] == "bounced" and r["lead"]}
    leaving = {r["lead"] for r in EXPECTED if r["class"] == "unsubscribed" and r["lead"]}
    assert {e for e, why in suppressed.items() if why == "bounced"} >= hard
    assert {e for e, why in suppressed.items() if why == "unsubscribed"} >= leaving
    by_type = dict(events)
    matched = [r for r in EXPECTED if r["lead"] and r["class"] != "other"]
    for kind in ("replied", "out_of_office", "bounced", "soft_bounced", "unsubscribed"):
        assert by_type.get(kind, 0) >= sum(1 for r in matched if r["class"] == kind)
    assert outcome.recorded == len(EXPECTED)
    assert outcome.errors == []


def test_reading_the_mailbox_marks_nothing_seen(
    corpus_synced: tuple[Runtime, dict[str, Any], Any],
) -> None:
    _rt, found, _outcome = corpus_synced
    flags = flags_of(found["account"], found["folder"])
    assert len(flags) == len(EXPECTED)
    assert all("\\Seen" not in f for f in flags.values())


# --- checkpoints and exactly once -------------------------------------------------------------


def counts(rt: Runtime) -> tuple[int, int]:
    with rt.engine.connect() as conn:
        inbound = conn.execute(select(func.count()).select_from(INBOUND)).scalar_one()
        events = conn.execute(
            select(func.count()).select_from(EVENTS).where(EVENTS.c.source == "mailbox")
        ).scalar_one()
    return inbound, events


Seeded = tuple[ImapAccount, str, Runtime]


@pytest.fixture
def seeded(imap_folder: tuple[ImapAccount, str], tmp_path: Path) -> Iterator[Seeded]:
    """A fresh folder, and a runtime reading it whose database has the corpus's leads."""
    account, folder = imap_folder
    rt = runtime_for(tmp_path, account, folder)
    seed_corpus_leads(rt)
    yield account, folder, rt
    rt.close()


def test_a_second_sync_fetches_only_what_is_new(seeded: Seeded) -> None:
    account, folder, rt = seeded
    messages = corpus_bytes()
    append(account, folder, messages[:10])
    first = sync_mailbox(rt, now=NOW)
    again = sync_mailbox(rt, now=NOW)
    append(account, folder, messages[10:15])
    third = sync_mailbox(rt, now=NOW + timedelta(hours=1))
    with rt.engine.connect() as conn:
        checkpoint = conn.execute(select(MAILBOX_CHECKPOINTS)).one()
    assert (first.fetched, again.fetched, third.fetched) == (10, 0, 5)
    assert (checkpoint.last_uid, checkpoint.messages) == (15, 15)


def test_a_changed_uidvalidity_rescans_without_recording_twice(seeded: Seeded) -> None:
    account, folder, rt = seeded
    messages = corpus_bytes()
    append(account, folder, messages)
    sync_mailbox(rt, now=NOW)
    before = counts(rt)
    recreate_folder(account, folder)  # the server renumbers: a new UIDVALIDITY
    append(account, folder, messages)
    rescan = sync_mailbox(rt, now=NOW + timedelta(hours=1))
    after = counts(rt)
    assert rescan.fetched == len(messages)
    assert rescan.already_known == len(messages)
    assert rescan.recorded == 0
    assert after == before


def stored(rt: Runtime) -> list[tuple[Any, ...]]:
    """What a sync left behind, comparable across databases (no ids, no times of day)."""
    with rt.engine.connect() as conn:
        inbound = conn.execute(
            select(
                INBOUND.c.uid,
                INBOUND.c.key,
                INBOUND.c.kind,
                INBOUND.c.lead_id,
                INBOUND.c.outbox_id,
                INBOUND.c.matched_by,
                INBOUND.c.snippet,
                INBOUND.c.evidence,
            ).order_by(INBOUND.c.uid)
        ).all()
        events = conn.execute(
            select(EVENTS.c.lead_id, EVENTS.c.type, EVENTS.c.data).order_by(EVENTS.c.id)
        ).all()
    return [tuple(r) for r in inbound] + [tuple(e) for e in events]


def test_a_sync_classifying_in_a_helper_process_records_what_one_in_process_does(
    imap_folder: tuple[ImapAccount, str], tmp_path: Path
) -> None:
    """Small batches, so batches are fetched, classified in the helper and recorded side by
    side; the rows, events and checkpoint are those of the in-process sync."""
    account, folder = imap_folder
    append(account, folder, corpus_bytes())
    config = tmp_path / "pipeline.yaml"
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["mailbox"] = {"batch_size": 4}
    config.write_text(yaml.safe_dump(data))
    results = []
    for helpers in (0, 1):
        home = tmp_path / f"helpers{helpers}"
        home.mkdir()
        rt = runtime_for(home, account, folder, config=config)
        seed_corpus_leads(rt)
        outcome = sync_mailbox(rt, now=NOW, helpers=helpers)
        results.append((outcome.as_dict(), stored(rt)))
        rt.close()
    (inline, inline_rows), (helped, helped_rows) = results
    assert inline["recorded"] == len(EXPECTED)
    assert helped == inline
    assert helped_rows == inline_rows


def test_a_helper_starts_only_for_enough_mail_and_a_free_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from leadflow.listening import sync

    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.9, 0.5, 0.4))
    assert sync._helpers_for(500) == 1
    assert sync._helpers_for(sync.HELPER_MIN_MESSAGES - 1) == 0  # not worth its start
    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 2.0, 2.0))
    assert sync._helpers_for(500) == 0  # both cores busy with other work
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert sync._helpers_for(500) == 0  # one core: nowhere to run it


def test_two_syncs_at_once_record_each_message_once(seeded: Seeded) -> None:
    account, folder, rt = seeded
    messages = corpus_bytes()
    append(account, folder, messages)
    other = Runtime.open(rt.settings)
    outcomes = []
    barrier = threading.Barrier(2)

    def run(runtime: Runtime) -> None:
        barrier.wait()
        outcomes.append(sync_mailbox(runtime, now=NOW))

    threads = [threading.Thread(target=run, args=(r,)) for r in (rt, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    inbound, _events = counts(rt)
    with rt.engine.connect() as conn:
        keys = [
            data["inbound"]
            for (data,) in conn.execute(select(EVENTS.c.data).where(EVENTS.c.source == "mailbox"))
        ]
    other.close()
    assert len(outcomes) == 2
    assert sum(o.recorded for o in outcomes) == len(messages) == inbound
    assert (
        len(keys)
        == len(set(keys))
        >= sum(1 for r in EXPECTED if r["lead"] and r["class"] != "other")
    )


def test_after_seen_marks_and_after_move_moves_only_recorded_messages(
    imap_folder: tuple[ImapAccount, str], tmp_path: Path
) -> None:
    account, folder = imap_folder
    append(account, folder, corpus_bytes()[:4])
    config = tmp_path / "seen.yaml"
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["mailbox"] = {"after": "seen"}
    config.write_text(yaml.safe_dump(data))
    rt = runtime_for(tmp_path, account, folder, config=config)
    sync_mailbox(rt, now=NOW)
    rt.close()
    assert all("\\Seen" in f for f in flags_of(account, folder).values())

    archive = new_folder(account, "archive")
    moving = tmp_path / "move.yaml"
    data["mailbox"] = {"after": f"move:{archive}"}
    moving.write_text(yaml.safe_dump(data))
    append(account, folder, corpus_bytes()[4:7])
    rt = Runtime.open(rt.settings.model_copy(update={"config": moving}))  # same database
    sync_mailbox(rt, now=NOW)
    rt.close()
    assert len(flags_of(account, folder)) == 4
    assert len(flags_of(account, archive)) == 3


def test_a_sync_killed_mid_way_resumes_and_records_each_message_once(
    imap_folder: tuple[ImapAccount, str], tmp_path: Path
) -> None:
    account, folder = imap_folder
    total = 1500
    append(account, folder, (synthetic_reply(i) for i in range(total)))
    config = tmp_path / "small-batches.yaml"
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["mailbox"] = {"batch_size": 25}
    config.write_text(yaml.safe_dump(data))
    rt = runtime_for(tmp_path, account, folder, config=config)
    with rt.engine.begin() as conn:
        conn.execute(
            insert(LEADS),
            [
                {
                    "email": f"reader{i}@globex.example",
                    "attributes": {},
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for i in range(0, total, 3)
            ],
        )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LEADFLOW_")},
        "LEADFLOW_DATABASE_URL": rt.settings.db_url,
        "LEADFLOW_CONFIG": str(config),
        "LEADFLOW_TEMPLATES": str(TEMPLATES),
        "LEADFLOW_MAILBOX_URL": mailbox_url(account, folder),
        "LEADFLOW_MAILBOX_PASSWORD": account.password,
        "LEADFLOW_HOME": str(tmp_path),
    }
    leadflow = [sys.executable, "-m", "leadflow.app.cli"]
    command = [*leadflow, "mailbox", "sync", "--now", NOW.isoformat()]
    worker = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    poll_until(lambda: worker.poll() is not None or counts(rt)[0] >= 100, timeout=60)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    at_kill = counts(rt)[0]
    finished = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, timeout=120)
    inbound, events = counts(rt)
    rt.close()
    assert 0 < at_kill < total, "the kill did not land mid-sync"
    assert finished.returncode == 0, finished.stderr.decode()
    assert inbound == total
    assert events == len(range(0, total, 3))


def synthetic_reply(i: int) -> bytes:
    return (
        f"From: Reader {i} <reader{i}@globex.example>\r\n"
        f"To: sales@acme-analytics.example\r\n"
        f"Subject: Re: Quick question {i}\r\n"
        f"Date: Mon, 07 Dec 2026 10:{i % 60:02d}:00 +0000\r\n"
        f"Message-ID: <reply{i}@globex.example>\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Thanks, number {i}: let's talk next week.\r\n"
    ).encode()


# --- the classifier alone ---------------------------------------------------------------------

PHRASES = load_config(DEFAULT_CONFIG, templates=TEMPLATES).config.mailbox.unsubscribe_phrases


def classified(raw: bytes) -> Any:
    return classify(parse(raw), raw, unsubscribe_phrases=PHRASES)


def test_an_unsubscribe_phrase_in_the_quoted_footer_is_not_a_request() -> None:
    raw = (
        b"From: Jane <jane@globex.example>\r\nSubject: Re: hi\r\nMessage-ID: <a@globex.example>\r\n"
        b"\r\nYes, let's talk on Thursday.\r\n\r\nOn Tue, Dec 1, 2026 at 9:14 AM Ada wrote:\r\n"
        b"> Not interested? Unsubscribe: https://x.example/u/1\r\n"
    )
    assert classified(raw).kind is Kind.REPLIED


def test_a_message_without_message_id_is_keyed_by_its_headers() -> None:
    raw = b"From: Jane <jane@globex.example>\r\nSubject: hello\r\n\r\nbody\r\n"
    first, second = classified(raw), classified(raw.replace(b"body", b"other body"))
    assert first.key.startswith("sha256:")
    assert first.key == second.key  # same headers, same message (a re-delivered copy)


def test_an_out_of_office_return_date_is_read_in_german() -> None:
    raw = (
        "From: Max <max@initech.example>\r\nSubject: Abwesenheitsnotiz: Ihre Anfrage\r\n"
        "Auto-Submitted: auto-replied\r\nDate: Tue, 01 Dec 2026 09:00:00 +0100\r\n"
        "Message-ID: <ooo@initech.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Ich bin bis zum 15.12.2026 nicht im Büro.\r\n"
    ).encode()
    found = classified(raw)
    assert found.kind is Kind.OUT_OF_OFFICE
    assert found.return_date == date(2026, 12, 15)


def _tree(msg: Any) -> tuple[Any, ...]:
    """Everything a parsed message holds, parts included."""
    payload = msg._payload
    parts = [_tree(p) for p in payload] if isinstance(payload, list) else payload
    return (
        type(msg),
        msg._headers,
        msg._unixfrom,
        msg._charset,
        msg.preamble,
        msg.epilogue,
        [type(d) for d in msg.defects],
        msg._default_type,
        parts,
    )


def _mangled(raw: bytes, rng: random.Random) -> bytes:
    """``raw`` with one of the edits that move a parser off its usual path."""
    edit, at = rng.randrange(6), rng.randrange(len(raw) + 1)
    insert = rng.choice(
        [b"\r", b"\n", b"\r\n", b"--", b" ", b"\t", b":", b"From ", b"\r\n\r\n", b"\x80"]
    )
    if edit == 0:
        return raw[:at] + insert + raw[at:]
    if edit == 1:
        return raw[:at] + raw[at + rng.randrange(1, 20) :]
    if edit == 2:
        return raw.replace(b"\r\n", b"\n")
    if edit == 3:
        return raw.replace(b"\r\n", b"\r")
    if edit == 4:
        return raw.replace(b"boundary=", b'boundary="x" x=', 1)
    lines = raw.split(b"\n")
    boundary = raw.partition(b'boundary="')[2].partition(b'"')[0] or b"A"
    line = rng.choice([b"--" + boundary, b"--" + boundary + b"--", b"", b" more", b"X-H: v"])
    lines.insert(rng.randrange(len(lines)), line)
    return b"\n".join(lines)


def test_the_fast_reader_builds_the_email_packages_tree_and_the_same_classes() -> None:
    """mime.read_message gives exactly email.message_from_bytes's tree (or leaves the message
    to it): the corpus and 40 mangled copies of each message; and classify's answer on it."""
    import email

    from leadflow.listening.mime import read_message

    rng = random.Random(15)
    corpus = corpus_bytes()
    mangled = [_mangled(raw, rng) for raw in corpus for _ in range(40)]
    read = 0
    for raw in corpus + mangled:
        fast, package = read_message(raw), email.message_from_bytes(raw)
        if fast is None:
            continue
        read += 1
        assert _tree(fast) == _tree(package), raw[:300]
        assert classify(fast, raw, unsubscribe_phrases=PHRASES) == classify(
            package, raw, unsubscribe_phrases=PHRASES
        )
    assert read >= len(corpus + mangled) // 2  # the common shapes are read fast


def test_a_sender_address_reads_as_getaddresses_reads_it() -> None:
    """facts._address's regex for the usual From shapes gives what getaddresses gives."""
    from email.utils import getaddresses

    from leadflow.listening.facts import _address

    def slow(value: str) -> str | None:
        found = [addr for _, addr in getaddresses([value]) if "@" in addr]
        return found[0].strip().lower() if found else None

    rng = random.Random(15)
    words = ["Peter", "W.", "O'Neil", "a-b", "#x", "`q", "{}", "x.y", ".", "..", "é", "Jr.", "~"]
    local = ["peter", "p.w", "a+b", "x_y", "'q'", "a..b", ".a", "a.", "é", "a b", 'a"b', "-"]
    domain = ["x.example", "x..y", ".x", "x.", "a-b.c", "[1.2.3.4]", "x", "é.x", "1.2"]
    values = [str(header_value) for header_value in _corpus_froms()]
    for _ in range(5000):
        name = " ".join(rng.choice(words) for _ in range(rng.randrange(0, 4)))
        if rng.random() < 0.3:
            name = '"' + name + rng.choice(["", ",", "(", "<", "@", "\\", ":"]) + '"'
        address = rng.choice(local) + "@" + rng.choice(domain)
        space = rng.choice(["", " ", "\t", "  "])
        values.append(f"{space}{name}{space}<{address}>" if rng.random() < 0.7 else address)
    for value in values:
        assert _address(value) == slow(value), value


def test_a_boundary_and_a_date_read_as_the_email_package_reads_them() -> None:
    """mime's plain-boundary regex gives what get_boundary gives, and facts._date's RFC 5322
    regex the instant parsedate_to_datetime gives (an error where it errs)."""
    from email.message import Message
    from email.utils import parsedate_to_datetime

    from leadflow.listening.facts import _date
    from leadflow.listening.mime import _boundary

    rng = random.Random(15)
    types = ["multipart/alternative", "Multipart/Related", "text/plain", " multipart/x ", ""]
    names = ["boundary", "BOUNDARY", "boundary ", "boundary*", "boundary*0", "charset"]
    values = ['"A"', "A", '"A B"', '"=_x.y"', "<x>", '"<x>"', '"a\\"b"', '"x', "0000b1c2", '"A "']
    tails = ["", " ", "\r\n", "; charset=utf-8", ";", "; boundary=B", ' type="text/plain"']
    for _ in range(3000):
        msg = Message()
        msg["Content-Type"] = (
            rng.choice(types)
            + rng.choice([";", "; ", ";\r\n\t", " ;", ";;", ""])
            + rng.choice(names)
            + rng.choice(["=", " =", "= "])
            + rng.choice(values)
            + rng.choice(tails)
        )
        assert _boundary(msg) == msg.get_boundary(), msg["Content-Type"]

    def package(value: str) -> object:
        try:
            when = parsedate_to_datetime(value)
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
        except (TypeError, ValueError, IndexError):  # what _date reads as no date
            return None
        except Exception as exc:
            return type(exc)
        try:
            return when.astimezone(UTC).isoformat()
        except Exception as exc:
            return type(exc)

    def ours(value: str) -> object:
        try:
            when = _date(value)
            return None if when is None else when.isoformat()
        except Exception as exc:
            return type(exc)

    for _ in range(3000):
        value = (
            f"{rng.choice(['', 'Mon, ', 'Sun, '])}{rng.randrange(0, 35)} "
            f"{rng.choice(['Jan', 'Feb', 'Dec'])} "
            f"{rng.choice(['1999', '2026', '0001', '9999', '2000', '1900'])} "
            f"{rng.randrange(0, 26):02d}:{rng.randrange(0, 62):02d}:{rng.randrange(0, 62):02d} "
            f"{rng.choice('+-')}{rng.choice([0, 0, 1, 23, 24, 29]):02d}"
            f"{rng.choice([0, 30, 60]):02d}"
        )
        assert ours(value) == package(value), value


def _corpus_froms() -> list[str]:
    import email

    return [str(email.message_from_bytes(raw).get("from", "")) for raw in corpus_bytes()]


def test_junk_in_the_mailbox_is_recorded_and_never_stops_the_sync(tmp_path: Path) -> None:
    """Hypothesis-made bytes (and a few classic breakers) in a Maildir: every message ends as
    a row, the sync finishes, and a second sync records nothing new."""
    import mailbox as stdlib_mailbox

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    junk = [
        b"",
        b"\x00\xff\xfe" * 100,
        b"Content-Type: multipart/report; boundary=\r\n\r\n--\r\n--",
        b"From: =?utf-8?b?////?= <\r\nSubject: \xff\r\nDate: 99 Foo 99999\r\n\r\nx",
        b"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: ;;;\r\nStatus: 9.9.9",
    ]

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.binary(max_size=400), min_size=1, max_size=5))
    def collect(extra: list[bytes]) -> None:
        junk.extend(extra)

    collect()
    box = stdlib_mailbox.Maildir(tmp_path / "mail", create=True)
    for raw in junk:
        box.add(raw)
    rt = runtime_for_maildir(tmp_path, database_url(tmp_path))
    first = sync_mailbox(rt, now=NOW)
    second = sync_mailbox(rt, now=NOW + timedelta(hours=1))
    with rt.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(INBOUND)).scalar_one()
    rt.close()
    assert first.errors == second.errors == []
    assert first.fetched == len(junk)
    assert stored == first.recorded > 0
    assert first.recorded + first.already_known == first.fetched  # same key: the same message
    assert second.recorded == 0


def soft_bounce(i: int, address: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.globex.example\r\nTo: ada@acme-analytics.example\r\n"
        "Subject: Delayed Mail (still being retried)\r\n"
        f"Message-ID: <soft{i}@mx.globex.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nMailbox full\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        f"Final-Recipient: rfc822; {address}\r\nAction: delayed\r\nStatus: 4.2.2\r\n\r\n--B--\r\n"
    ).encode()


def test_soft_bounces_in_a_row_suppress_the_address_and_status_shows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import mailbox as stdlib_mailbox

    from leadflow.app.cli import main

    box = stdlib_mailbox.Maildir(tmp_path / "mail", create=True)
    url = database_url(tmp_path)
    rt = runtime_for_maildir(tmp_path, url)
    with rt.engine.begin() as conn:
        conn.execute(
            insert(LEADS).values(
                email="full@globex.example", attributes={}, created_at=NOW, updated_at=NOW
            )
        )
    suppressed_after = []
    for i in range(3):  # soft_bounce_limit is 3 in the default config
        box.add(soft_bounce(i, "full@globex.example"))
        sync_mailbox(rt, now=NOW + timedelta(days=i))
        with rt.engine.connect() as conn:
            suppressed_after.append(
                conn.execute(select(SUPPRESSIONS.c.reason, SUPPRESSIONS.c.detail)).all()
            )
    rt.close()
    assert suppressed_after[:2] == [[], []]
    assert suppressed_after[2] == [("bounced", "3 soft bounces in a row")]

    for key, value in {
        "LEADFLOW_DATABASE_URL": url,
        "LEADFLOW_CONFIG": str(DEFAULT_CONFIG),
        "LEADFLOW_TEMPLATES": str(TEMPLATES),
        "LEADFLOW_HOME": str(tmp_path),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["leadflow", "mailbox", "status", "--json"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code in (0, None)
    status = json.loads(capsys.readouterr().out)
    assert status["classes"] == {"soft_bounced": {"matched": 3, "unmatched": 0}}
    assert [(c["folder"], c["messages"]) for c in status["checkpoints"]] == [("", 3)]


def runtime_for_maildir(tmp_path: Path, url: str) -> Runtime:
    return listening_runtime(tmp_path, url, f"maildir://{tmp_path / 'mail'}")
