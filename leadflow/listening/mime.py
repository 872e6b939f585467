"""A fast reader for the common shapes of mail: the very ``Message`` that the ``email``
package's compat32 parser (``email.message_from_bytes``) builds, or None.

The package's parser reads a message a line at a time through a feed interface made for
data that arrives in pieces (a deque, a stack of end-of-part checks and a generator per part):
~0.14 ms for a short reply, as much as everything else the sync does to it. A fetched message
is whole, so here its lines are cracked at once (``StringIO(newline='').readlines()``, the
same line ends the package uses: CRLF, CR or LF) and the package's algorithm is followed on
that list: headers (``header_source_parse`` of compat32, so the same names and values),
``text/*`` and other leaf parts (the rest of the part as payload), ``multipart/*`` parts
nested to any depth (preamble, parts, epilogue; the line end before a boundary belongs to
the boundary; an outer boundary ends every inner part), ``message/rfc822`` (a message inside)
and ``message/delivery-status`` (blocks of headers) as the package builds them, from
``email.message.Message`` itself, so every method the classifier calls answers as it would
on the package's tree.

Anything the package would mark as a defect is left to it (None): a ``From `` envelope line,
a header without a name, a continuation line first, a header block that does not end in an
empty line, ``multipart/digest``, a multipart without a boundary, with a transfer encoding
other than 7bit/8bit/binary, without its first or its closing boundary, or with a boundary
on the very last line; so is a status block of an unusual shape. ``tests/test_mailbox.py``
checks that both readers build the same tree for the corpus and mangled copies of it.
"""

from __future__ import annotations

import io
import re
from bisect import bisect_left
from collections.abc import Callable
from email.message import Message

# The package's own patterns (email.feedparser): a header or continuation line, a line end.
_HEADER_LINE = re.compile(r"^(From |[\041-\071\073-\176]*:|[\t ])")
_NL = re.compile(r"\r\n|\r|\n")
_NL_AT_END = re.compile(r"(\r\n|\r|\n)\Z")
_NL_AT_START = re.compile(r"(\r\n|\r|\n)")
# What may follow "--boundary" on a boundary line (feedparser's boundaryre without the boundary).
_BOUNDARY_REST = re.compile(r"(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$")
_MULTIPART_CTE = ("7bit", "8bit", "binary")

_Matcher = Callable[[str], "re.Match[str] | None"]


class _Unusual(Exception):
    """A shape the package's parser handles in its own way (a defect, a message/* part)."""


def read_message(raw: bytes) -> Message | None:
    """``email.message_from_bytes(raw)``'s tree, built faster, or None when ``raw`` has a
    shape left to the package (see the module docstring)."""
    text = raw.decode("ascii", "surrogateescape")
    lines = io.StringIO(text, newline="").readlines()
    dashes = [index for index, line in enumerate(lines) if line.startswith("--")]
    try:
        msg, _, _ = _read_part(lines, 0, [], None, dashes)
    except _Unusual:
        return None
    return msg


def _boundary_matcher(separator: str) -> _Matcher:
    rest = _BOUNDARY_REST.match

    def match(line: str) -> re.Match[str] | None:
        if not line.startswith(separator):
            return None
        return rest(line, len(separator))

    return match


def _at_eof(line: str, stack: list[_Matcher]) -> bool:
    """A boundary of any enclosing multipart ends the part being read (RFC 2046 5.1.2)."""
    if not line.startswith("--"):  # what every boundary line starts with
        return False
    return any(match(line) for match in stack)


def _body_end(lines: list[str], at: int, stack: list[_Matcher], dashes: list[int]) -> int:
    """The first line from ``at`` on that a boundary of ``stack`` matches, else the end. Only
    the lines starting with "--" (``dashes``, their indexes) can be one."""
    if not stack:
        return len(lines)
    for index in dashes[bisect_left(dashes, at) :]:
        if _at_eof(lines[index], stack):
            return index
    return len(lines)


def _read_part(
    lines: list[str], at: int, stack: list[_Matcher], parent: Message | None, dashes: list[int]
) -> tuple[Message, int, Message]:
    """The part starting at line ``at``, the line after it (the boundary that ended it, or
    the end), and the last message made for it (where the package strips the line end that
    belongs to the next boundary: the part, or the last of a message/* part's own)."""
    msg = Message()
    if parent is not None:
        parent.attach(msg)
    end = len(lines)
    start = headers_end = at
    while at < end:
        line = lines[at]
        if stack and _at_eof(line, stack):
            break  # a part of headers only
        if not _HEADER_LINE.match(line):
            if not _NL.match(line):
                raise _Unusual("no empty line after the headers")
            at += 1
            break
        at += 1
        headers_end = at
    else:
        raise _Unusual("headers up to the end")
    content_type = _set_headers(msg, lines[start:headers_end])
    if content_type is None:
        maintype = "text"  # the default type of a part outside a digest: text/plain
    elif content_type.isascii():  # get_content_type()'s reading, without its header scan
        ctype = content_type.partition(";")[0].strip().lower()
        maintype = ctype.split("/")[0] if ctype.count("/") == 1 else "text"
        if ctype == "multipart/digest":
            raise _Unusual("a digest")
    else:
        maintype = msg.get_content_maintype()
        if msg.get_content_type() == "multipart/digest":
            raise _Unusual("a digest")
    if maintype == "message":  # the package's order: delivery-status, other message/*
        if _type(msg, content_type) == "message/delivery-status":
            last, at = _read_status_blocks(msg, lines, at, stack)
            return msg, at, last
        _, at, last = _read_part(lines, at, stack, msg, dashes)  # message/rfc822: a message
        return msg, at, last
    if maintype != "multipart":
        body_end = _body_end(lines, at, stack, dashes)
        msg._payload = "".join(lines[at:body_end])  # type: ignore[attr-defined]  # set_payload
        return msg, body_end, msg
    return msg, _read_multipart(msg, lines, at, stack, dashes), msg


def _type(msg: Message, content_type: str | None) -> str:
    if content_type is not None and content_type.isascii():
        ctype = content_type.partition(";")[0].strip().lower()
        return ctype if ctype.count("/") == 1 else "text/plain"
    return msg.get_content_type()


def _read_status_blocks(
    msg: Message, lines: list[str], at: int, stack: list[_Matcher]
) -> tuple[Message, int]:
    """A ``message/delivery-status`` part: blocks of headers, each a message of its own,
    an empty line between them (``FeedParser._parsegen``'s branch for it). The last block,
    and the line after the part."""
    end = len(lines)
    while True:
        block = Message()
        msg.attach(block)
        start = at
        while at < end and not _NL.match(lines[at]) and not (stack and _at_eof(lines[at], stack)):
            if not _HEADER_LINE.match(lines[at]):
                raise _Unusual("a status block line that is no header")
            at += 1
        if at >= end:
            raise _Unusual("a status block up to the end")
        if _set_headers(block, lines[start:at]) is not None:
            raise _Unusual("a status block with a type of its own")
        block._payload = ""  # type: ignore[attr-defined]  # its body ends where it starts
        if not (stack and _at_eof(lines[at], stack)):
            at += 1  # the empty line after the block
        if at >= end or (stack and _at_eof(lines[at], stack)):
            return block, at


# A header field: its name, and its value from the first non-blank character of the line on
# through its continuation lines (without the last line end): compat32's header_source_parse.
_FIELD = re.compile(r"([^:\r\n]*):[ \t]*([^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*)(?:\r\n|\r|\n)?")


def _set_headers(msg: Message, header_lines: list[str]) -> str | None:
    """``FeedParser._parse_headers`` for lines without its defects (those go to the package);
    the first Content-Type's value. The lines are header or continuation lines (the caller
    checked each against the package's pattern)."""
    if not header_lines:
        return None
    block = "".join(header_lines)
    if block[0] in " \t":
        raise _Unusual("a continuation line first")
    if (
        block.startswith(("From ", ":"))
        or "\nFrom " in block
        or "\rFrom " in block
        or "\n:" in block
        or "\r:" in block
    ):
        raise _Unusual("an envelope line or a header without a name")
    fields = _FIELD.findall(block)
    msg._headers.extend(fields)  # type: ignore[attr-defined]  # what set_raw appends to
    for name, value in fields:
        if len(name) == 12 and name.lower() == "content-type":
            return str(value)
    return None


# A Content-Type of one type and a plain boundary parameter, quoted or not, the shape nearly
# every multipart has ("multipart/alternative;\r\n\tboundary=\"000000000000b1c2\""): what
# get_boundary() answers, without parsing and decoding every parameter (tests/test_mailbox.py).
_PLAIN_BOUNDARY = re.compile(
    r'[^;"\\=]*;\s*boundary=(?:"([A-Za-z0-9\'()+_,./:=?-]+)"|([A-Za-z0-9\'()+_,./:=?-]+))\s*',
    re.I,
)


def _boundary(msg: Message) -> str | None:
    """``msg.get_boundary()``."""
    value = msg.get("content-type")
    plain = _PLAIN_BOUNDARY.fullmatch(value) if isinstance(value, str) else None
    if plain is None:
        return msg.get_boundary()
    return plain.group(1) or plain.group(2)


def _read_multipart(
    msg: Message, lines: list[str], at: int, stack: list[_Matcher], dashes: list[int]
) -> int:
    """The parts of ``msg`` from line ``at``: ``FeedParser._parsegen``'s multipart branch."""
    boundary = _boundary(msg)
    if boundary is None:
        raise _Unusual("a multipart without a boundary")
    if str(msg.get("content-transfer-encoding", "8bit")).lower() not in _MULTIPART_CTE:
        raise _Unusual("a multipart with a transfer encoding")
    match = _boundary_matcher("--" + boundary)
    end = len(lines)
    preamble: list[str] = []
    in_preamble = True
    closing_linesep: str | None = None
    closed = False
    while at < end and not (stack and _at_eof(lines[at], stack)):
        line = lines[at]
        at += 1
        found = match(line)
        if not found:
            if not in_preamble:
                raise _Unusual("text between parts")  # the package asserts this never happens
            preamble.append(line)
            continue
        if found.group("end"):
            closed = True
            closing_linesep = found.group("linesep")
            break
        if in_preamble:
            if preamble:
                last = _NL_AT_END.search(preamble[-1])
                if last:
                    preamble[-1] = preamble[-1][: -len(last.group(0))]
                msg.preamble = "".join(preamble)
            in_preamble = False
            at -= 1  # read the boundary again, as the first between parts
            continue
        while True:  # several boundary lines in a row: no part between them
            if at >= end or (stack and _at_eof(lines[at], stack)):
                raise _Unusual("a boundary on the last line")
            if not match(lines[at]):
                break
            at += 1
        stack.append(match)
        _, at, part = _read_part(lines, at, stack, msg, dashes)
        stack.pop()
        # the line end before a boundary belongs to the boundary, not to the part
        if part.get_content_maintype() == "multipart":
            epilogue = part.epilogue
            if epilogue == "":
                part.epilogue = None
            elif epilogue is not None:
                last = _NL_AT_END.search(epilogue)
                if last:
                    part.epilogue = epilogue[: -len(last.group(0))]
        else:
            payload = part._payload  # type: ignore[attr-defined]
            if isinstance(payload, str):
                last = _NL_AT_END.search(payload)
                if last:
                    part._payload = payload[: -len(last.group(0))]  # type: ignore[attr-defined]
    if in_preamble or not closed:
        raise _Unusual("no first or no closing boundary")
    after = [""] if closing_linesep else []
    while at < end and not (stack and _at_eof(lines[at], stack)):
        after.append(lines[at])
        at += 1
    if after:
        first = _NL_AT_START.match(after[0])
        if first:
            after[0] = after[0][len(first.group(0)) :]
    msg.epilogue = "".join(after)
    return at
