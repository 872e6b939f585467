"""Helpers for tests against the real Dovecot IMAP server that ``scripts/with-dovecot`` starts.

The server is reached through ``LEADFLOW_TEST_IMAP_URL`` (``imap+plain://USER@HOST:PORT/INBOX``)
and ``LEADFLOW_TEST_IMAP_PASSWORD``. Every test works in a folder of its own (``new_folder``), so
tests never see one another's messages and need not clean the server up. Importing this module
registers no fixture: ``imap_folder_fixture()`` builds one for a conftest to register::

    imap_folder = imap_folder_fixture()
"""

from __future__ import annotations

import imaplib
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import pytest
from imap_tools import MailBoxUnencrypted
from imap_tools.utils import encode_folder

URL_VAR = "LEADFLOW_TEST_IMAP_URL"
PASSWORD_VAR = "LEADFLOW_TEST_IMAP_PASSWORD"
_HOW = "run the tests under scripts/with-dovecot, as make test does"


@dataclass(frozen=True)
class ImapAccount:
    host: str
    port: int
    user: str
    password: str


def account_from_env() -> ImapAccount:
    """The account of the server started by ``scripts/with-dovecot``."""
    url = os.environ.get(URL_VAR)
    password = os.environ.get(PASSWORD_VAR)
    if not url or password is None:
        raise RuntimeError(f"{URL_VAR} and {PASSWORD_VAR} are not set: {_HOW}")
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imap+plain") or not parts.hostname or not parts.username:
        raise RuntimeError(f"{URL_VAR}={url!r} is not imap+plain://USER@HOST:PORT/FOLDER: {_HOW}")
    return ImapAccount(
        host=parts.hostname,
        port=parts.port or 143,
        user=unquote(parts.username),
        password=password,
    )


@contextmanager
def connect(account: ImapAccount, folder: str | None = "INBOX") -> Iterator[MailBoxUnencrypted]:
    """A logged-in imap-tools mailbox with ``folder`` selected (none when ``folder`` is None)."""
    mailbox = MailBoxUnencrypted(account.host, account.port, timeout=30)
    mailbox.login(account.user, account.password, initial_folder=folder)
    try:
        yield mailbox
    finally:
        mailbox.logout()


def new_folder(account: ImapAccount, name_prefix: str = "t") -> str:
    """Create a folder no other test uses (``t_<12 hex digits>``) and return its name."""
    folder = f"{name_prefix}_{uuid.uuid4().hex[:12]}"
    with connect(account, None) as mailbox:
        mailbox.folder.create(folder)
    return folder


def delete_folder(account: ImapAccount, folder: str) -> None:
    with connect(account, None) as mailbox:
        mailbox.folder.delete(folder)


def recreate_folder(account: ImapAccount, folder: str) -> None:
    """Delete ``folder`` and create it again, empty: Dovecot gives it a new UIDVALIDITY."""
    with connect(account, None) as mailbox:
        mailbox.folder.delete(folder)
        mailbox.folder.create(folder)


def append(
    account: ImapAccount,
    folder: str,
    messages: Iterable[bytes],
    *,
    flags: Iterable[str] = (),
) -> int:
    r"""APPEND raw RFC 5322 messages to ``folder`` over one connection; return how many.

    ``flags`` (e.g. ``("\Seen",)``) are set on every message; without them messages are unseen.
    Messages go in MULTIAPPEND commands of up to ``_BATCH`` messages with non-synchronizing
    literals: Dovecot commits each command once (one APPEND per message costs a transaction
    each, several milliseconds on Maildir, and grows with the folder).
    """
    flag_list = f"({' '.join(flags)}) ".encode() if flags else b""
    count = 0
    with connect(account, None) as mailbox:
        client = mailbox.client
        _, data = client.capability()
        missing = {b"MULTIAPPEND", b"LITERAL+"} - set(data[0].split())
        if missing:
            raise RuntimeError(f"the IMAP server lacks {sorted(missing)}: {data[0]!r}")
        target = encode_folder(folder)
        batch: list[bytes] = []
        for message in messages:
            batch.append(message)
            if len(batch) == _BATCH:
                count += _multiappend(client, target, flag_list, batch, count)
                batch = []
        if batch:
            count += _multiappend(client, target, flag_list, batch, count)
    return count


_BATCH = 1000


def _multiappend(
    client: imaplib.IMAP4, target: bytes, flag_list: bytes, batch: list[bytes], done: int
) -> int:
    tag = b"LFA%d" % done
    command = bytearray(tag + b" APPEND " + target)
    for message in batch:
        command += b" %s{%d+}\r\n" % (flag_list, len(message)) + message
    command += b"\r\n"
    client.send(bytes(command))
    while True:  # no mailbox is selected: nothing but the tagged reply is expected
        line = client.readline()
        if not line:
            raise RuntimeError("the IMAP server closed the connection during APPEND")
        if line.startswith(tag + b" "):
            break
    if not line.startswith(tag + b" OK"):
        raise RuntimeError(f"APPEND of {len(batch)} messages failed: {line!r}")
    return len(batch)


def uidvalidity(account: ImapAccount, folder: str) -> int:
    with connect(account, None) as mailbox:
        return mailbox.folder.status(folder, ["UIDVALIDITY"])["UIDVALIDITY"]


_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")


def flags_of(account: ImapAccount, folder: str) -> dict[int, set[str]]:
    r"""uid -> flags of every message in ``folder``, read without changing any (EXAMINE).

    ``\Recent`` is left out: it is not stored, and depends on which session looked first.
    """
    with connect(account, None) as mailbox:
        mailbox.folder.set(folder, readonly=True)
        typ, data = mailbox.client.uid("FETCH", "1:*", "(UID FLAGS)")
    if typ != "OK":
        raise RuntimeError(f"FETCH FLAGS in {folder!r} failed: {typ} {data!r}")
    result: dict[int, set[str]] = {}
    for item in data:
        line = item[0] if isinstance(item, tuple) else item
        if not isinstance(line, bytes):
            continue  # an empty folder answers with no data
        uid, flag_text = _UID.search(line), _FLAGS.search(line)
        if uid is None or flag_text is None:
            raise RuntimeError(f"unexpected FETCH response in {folder!r}: {line!r}")
        result[int(uid.group(1))] = set(flag_text.group(1).decode().split()) - {"\\Recent"}
    return result


def imap_folder_fixture() -> Callable[[], Iterator[tuple[ImapAccount, str]]]:
    """A function-scoped fixture yielding ``(account, folder)``: a fresh folder, deleted after."""

    @pytest.fixture
    def imap_folder() -> Iterator[tuple[ImapAccount, str]]:
        account = account_from_env()
        folder = new_folder(account)
        yield account, folder
        delete_folder(account, folder)

    return imap_folder
