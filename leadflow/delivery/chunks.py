"""How claimed rows are cut into chunks: each chunk is built while the one before it is on the
wire."""

from __future__ import annotations

import asyncio

# Messages are built, then sent, a chunk at a time over the batch's one pool. The next chunk is
# built while the previous one is on the wire (the relay works while this process renders), and
# only a few chunks of built messages are alive at once. The first chunks are smaller, so the
# wire starts early, and so are the last, so it is not left to work alone for long at the end.
# (Measured with the batches of a session following one another: 5,000 messages took a median
# of 3.20 s in chunks of 200, 3.13 s in chunks of 300, 3.11-3.13 s in chunks of 400 or 500;
# 300 also keeps the records a crash can lose small.)
CHUNK = 300
FIRST_CHUNK = 16
# Event-loop turns given to the SMTP workers after each message built: a reply the server sent
# meanwhile takes three turns (aiosmtplib's read, then ``asyncio.wait_for``'s two hand-offs)
# to become the next command; with one turn, building would hold each SMTP step back for
# three messages' worth of rendering.
YIELDS = 4


async def let_the_wire_move() -> None:
    for _turn in range(YIELDS):
        await asyncio.sleep(0)


def next_chunk_size(index: int, available: int, *, final: bool) -> int:
    """How many of ``available`` built-to-be messages make chunk number ``index``: doubling
    from ``FIRST_CHUNK`` up to ``CHUNK``; once no more rows are coming (``final``), halving
    down again over the last ones."""
    size = ramp(index)
    if final:
        if available < 2 * size:
            size = max(FIRST_CHUNK, available // 2)
        if available - size < FIRST_CHUNK:  # no runt chunk at the very end
            size = min(available, CHUNK)
    return min(size, available)


def ramp(index: int) -> int:
    """The size of chunk number ``index`` while more rows are coming."""
    return min(CHUNK, FIRST_CHUNK << min(index, 20))


def chunk_sizes(total: int, *, final: bool = True) -> list[int]:
    """The chunk sizes ``total`` rows claimed at once are sent in (see ``next_chunk_size``)."""
    sizes: list[int] = []
    while total:
        sizes.append(next_chunk_size(len(sizes), total, final=final))
        total -= sizes[-1]
    return sizes
