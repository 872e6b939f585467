"""Where inbound mail is read from: an IMAP server or a Maildir folder.

``LEADFLOW_MAILBOX_URL`` names it:

| URL | transport |
|---|---|
| ``imaps://user@host[:993]/INBOX,Bounces`` | IMAP over TLS |
| ``imap://user@host[:143]/INBOX`` | IMAP with STARTTLS (refused if the server cannot) |
| ``imap+plain://user@host:port/INBOX`` | IMAP without TLS: loopback hosts only (tests) |
| ``maildir:///path/to/Maildir`` | a Maildir on disk (the demo; mail delivered otherwise) |

Several folders are separated by commas. The IMAP client is imap-tools (see docs/mailbox.md
for why): messages are fetched with ``BODY.PEEK[]``, so reading never marks anything seen;
only ``mailbox.after`` in the YAML (``seen`` or ``move:Folder``) changes the mailbox, and only
after the messages are recorded.

A reader hands out messages after a checkpoint, oldest first, in batches: for IMAP the
checkpoint is the last UID under the folder's UIDVALIDITY; a Maildir has no UIDs, so its
"UID" is the file's modification time in nanoseconds (with UIDVALIDITY 0), and messages
that share the last instant are offered again and recognised by their key.
"""

from __future__ import annotations

import mailbox
import os
import ssl
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import unquote, urlsplit

from imap_tools import BaseMailBox, MailBox, MailBoxStartTls, MailBoxUnencrypted, MailMessage

from leadflow.resource import Resource

SCHEMES = ("imaps", "imap", "imap+plain", "maildir")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_TIMEOUT = 60.0


class MailboxError(Exception):
    """The mailbox cannot be read (bad URL, login refused, folder missing, server down)."""


@dataclass(frozen=True)
class MailboxLocation:
    scheme: str
    host: str
    port: int
    user: str
    folders: tuple[str, ...]
    path: Path | None = None

    @property
    def label(self) -> str:
        """The mailbox named without its password: the checkpoint key and what logs show."""
        if self.scheme == "maildir":
            return f"maildir://{self.path}"
        return f"{self.scheme}://{self.user}@{self.host}:{self.port}"


def parse_mailbox_url(url: str) -> MailboxLocation:
    """Read ``LEADFLOW_MAILBOX_URL``; a ``MailboxError`` says what is wrong with it."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise MailboxError(
            f"LEADFLOW_MAILBOX_URL: unsupported scheme '{scheme or url}' "
            f"(use one of {', '.join(s + '://' for s in SCHEMES)})"
        )
    if scheme == "maildir":
        path = Path(unquote(parts.netloc + parts.path))
        if not str(path).strip() or str(path) == ".":
            raise MailboxError(
                "LEADFLOW_MAILBOX_URL: maildir:// needs a path (maildir:///srv/mail)"
            )
        return MailboxLocation(scheme, "", 0, "", ("",), path=path)
    if not parts.hostname:
        raise MailboxError("LEADFLOW_MAILBOX_URL: no host (imaps://user@imap.example.com/INBOX)")
    if not parts.username:
        raise MailboxError("LEADFLOW_MAILBOX_URL: no user (imaps://user@imap.example.com/INBOX)")
    if parts.password:
        raise MailboxError(
            "LEADFLOW_MAILBOX_URL must not hold the password: set LEADFLOW_MAILBOX_PASSWORD"
        )
    if scheme == "imap+plain" and parts.hostname not in LOOPBACK:
        raise MailboxError(
            "LEADFLOW_MAILBOX_URL: imap+plain:// sends the password in clear and is allowed "
            "for loopback hosts only; use imaps:// or imap:// (STARTTLS)"
        )
    try:
        port = parts.port or (993 if scheme == "imaps" else 143)
    except ValueError:
        raise MailboxError("LEADFLOW_MAILBOX_URL: the port is not a number") from None
    folders = tuple(f.strip() for f in unquote(parts.path.lstrip("/")).split(",") if f.strip()) or (
        "INBOX",
    )
    return MailboxLocation(scheme, parts.hostname, port, unquote(parts.username), folders)


@dataclass(frozen=True)
class Fetched:
    uid: int
    raw: bytes


class FolderReader(Protocol):
    name: str
    uidvalidity: int

    def after(self, last_uid: int, *, batch: int) -> Iterator[list[Fetched]]:
        """Messages with a UID above ``last_uid``, oldest first, ``batch`` at a time."""
        ...

    def finish(self, uids: list[int], action: str) -> None:
        """Apply ``mailbox.after`` (leave, seen, move:Folder) to recorded messages."""
        ...


class MailSource(Protocol):
    location: MailboxLocation

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def folder(self, name: str) -> FolderReader: ...


def open_source(
    location: MailboxLocation, *, password: str | None, timeout: float = DEFAULT_TIMEOUT
) -> MailSource:
    if location.scheme == "maildir":
        return MaildirSource(location)
    if not password:
        raise MailboxError("LEADFLOW_MAILBOX_PASSWORD is not set")
    return ImapSource(location, password=password, timeout=timeout)


# --- IMAP -------------------------------------------------------------------------------------


class _Raw(MailMessage):
    """A fetched message kept as bytes: imap-tools would parse every message on arrival,
    and the classifier parses it its own way."""

    def __init__(self, fetch_data: list[Any]) -> None:
        raw, uid_data, flag_data = self._get_message_data_parts(fetch_data)
        self._raw_uid_data = uid_data
        self._raw_flag_data = flag_data
        self.raw = raw


class ImapSource(Resource):
    def __init__(self, location: MailboxLocation, *, password: str, timeout: float) -> None:
        self.location = location
        self._password = password
        self._timeout = timeout
        self._box: BaseMailBox | None = None

    def open(self) -> None:
        loc = self.location
        box: BaseMailBox
        try:
            if loc.scheme == "imaps":
                box = MailBox(loc.host, loc.port, timeout=self._timeout)
            elif loc.scheme == "imap":
                box = MailBoxStartTls(
                    loc.host,
                    loc.port,
                    timeout=self._timeout,
                    ssl_context=ssl.create_default_context(),
                )
            else:
                box = MailBoxUnencrypted(loc.host, loc.port, timeout=self._timeout)
            box.email_message_class = _Raw
            box.login(loc.user, self._password, initial_folder=None)
        except Exception as exc:
            raise MailboxError(f"{loc.label}: cannot log in: {_short(exc)}") from None
        self._box = box

    def close(self) -> None:
        if self._box is not None:
            with suppress(Exception):  # the connection may already be gone; nothing to undo
                self._box.logout()
            self._box = None

    def folder(self, name: str) -> FolderReader:
        if self._box is None:
            raise MailboxError("the mailbox is not open")
        box = self._box
        try:
            box.folder.set(name)
            status = box.folder.status(name, ["UIDVALIDITY"])
        except Exception as exc:
            raise MailboxError(f"{self.location.label}: folder '{name}': {_short(exc)}") from None
        return _ImapFolder(box, name, int(status["UIDVALIDITY"]))


class _ImapFolder:
    def __init__(self, box: BaseMailBox, name: str, uidvalidity: int) -> None:
        self._box = box
        self.name = name
        self.uidvalidity = uidvalidity

    def after(self, last_uid: int, *, batch: int) -> Iterator[list[Fetched]]:
        try:
            uids = [int(u) for u in self._box.uids(f"UID {last_uid + 1}:*")]
        except Exception as exc:
            raise MailboxError(f"folder '{self.name}': search failed: {_short(exc)}") from None
        wanted = sorted(u for u in uids if u > last_uid)  # "n:*" always includes the last UID
        for start in range(0, len(wanted), batch):
            chunk = [str(u) for u in wanted[start : start + batch]]
            try:
                fetched = [
                    Fetched(int(m.uid or 0), m.raw)  # type: ignore[attr-defined]
                    for m in self._box.fetch(
                        uid_list=chunk, mark_seen=False, bulk=max(len(chunk), 2)
                    )
                ]
            except Exception as exc:
                raise MailboxError(f"folder '{self.name}': fetch failed: {_short(exc)}") from None
            fetched.sort(key=lambda f: f.uid)
            yield fetched

    def finish(self, uids: list[int], action: str) -> None:
        if not uids or action == "leave":
            return
        listed = [str(u) for u in uids]
        if action == "seen":
            self._box.flag(listed, "\\Seen", True)
        elif action.startswith("move:"):
            self._box.move(listed, action.removeprefix("move:"))


# --- Maildir ----------------------------------------------------------------------------------


class MaildirSource(Resource):
    def __init__(self, location: MailboxLocation) -> None:
        self.location = location

    def open(self) -> None:
        path = self.location.path
        if path is None or not (path / "new").is_dir() or not (path / "cur").is_dir():
            raise MailboxError(f"{self.location.label}: not a Maildir (no new/ and cur/ inside)")

    def folder(self, name: str) -> FolderReader:
        assert self.location.path is not None
        return _MaildirFolder(self.location.path, name)


class _MaildirFolder:
    uidvalidity = 0

    def __init__(self, path: Path, name: str) -> None:
        self._box = mailbox.Maildir(path, create=False)
        self.name = name
        self._paths: dict[int, list[str]] = {}

    def after(self, last_uid: int, *, batch: int) -> Iterator[list[Fetched]]:
        found: list[tuple[int, str]] = []
        for sub in ("new", "cur"):
            folder = Path(self._box._path) / sub
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.is_file():
                        continue
                    stamp = entry.stat().st_mtime_ns
                    if stamp >= last_uid:  # equal: offered again, its key says it is known
                        found.append((stamp, entry.path))
        found.sort()
        for start in range(0, len(found), batch):
            chunk = []
            for stamp, path in found[start : start + batch]:
                try:
                    chunk.append(Fetched(stamp, Path(path).read_bytes()))
                except FileNotFoundError:  # moved or deleted by a mail client meanwhile
                    continue
            yield chunk

    def finish(self, uids: list[int], action: str) -> None:
        return None  # a Maildir is left as it is: its owner's mail client manages it


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
