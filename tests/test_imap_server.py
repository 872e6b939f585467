"""The IMAP test helpers against the real Dovecot server of scripts/with-dovecot (never skipped:
without the server these tests fail and say how to run them)."""

from __future__ import annotations

from email.message import EmailMessage

from imap_server import (
    account_from_env,
    append,
    connect,
    delete_folder,
    flags_of,
    new_folder,
    recreate_folder,
    uidvalidity,
)


def _message(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Dana Prospect <dana@example.com>"
    message["To"] = "sales@leadflow.test"
    message["Subject"] = subject
    message.set_content(f"Reply to {subject}.\n")
    return message.as_bytes()


def test_appended_messages_come_back_unseen() -> None:
    account = account_from_env()
    folder = new_folder(account)
    try:
        assert append(account, folder, [_message("first reply"), _message("second reply")]) == 2

        with connect(account, folder) as mailbox:
            fetched = list(mailbox.fetch(headers_only=True, mark_seen=False))
        assert sorted(m.subject for m in fetched) == ["first reply", "second reply"]
        assert all(m.text == "" for m in fetched)  # headers only
        flags = flags_of(account, folder)
        assert sorted(flags) == sorted(int(m.uid) for m in fetched if m.uid)
        assert all("\\Seen" not in f for f in flags.values())
    finally:
        delete_folder(account, folder)


def test_flags_given_to_append_are_set() -> None:
    account = account_from_env()
    folder = new_folder(account)
    try:
        append(account, folder, [_message("already read")], flags=("\\Seen",))
        assert list(flags_of(account, folder).values()) == [{"\\Seen"}]
    finally:
        delete_folder(account, folder)


def test_a_new_folder_is_empty_and_its_own() -> None:
    account = account_from_env()
    first, second = new_folder(account), new_folder(account)
    try:
        assert first != second
        append(account, first, [_message("only in the first")])
        assert flags_of(account, second) == {}
        assert len(flags_of(account, first)) == 1
    finally:
        delete_folder(account, first)
        delete_folder(account, second)


def test_recreating_a_folder_changes_its_uidvalidity_and_empties_it() -> None:
    account = account_from_env()
    folder = new_folder(account)
    try:
        append(account, folder, [_message("before")])
        before = uidvalidity(account, folder)

        recreate_folder(account, folder)

        assert uidvalidity(account, folder) != before
        assert flags_of(account, folder) == {}
    finally:
        delete_folder(account, folder)
