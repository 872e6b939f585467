"""Pure CPU work on other cores, in helper processes kept for one run.

Why not ``multiprocessing``: forking a process that has threads (a Prefect flow run has its
task runner's and the API client's) can copy a lock another thread holds into the child,
where nobody will ever release it; and its ``spawn`` and ``forkserver`` helpers re-import
the parent's ``__main__`` module (``prefect.engine`` in a flow run, a benchmark, a script
without a ``__main__`` guard, which then starts helpers of its own). So a helper here is a
fresh interpreter, ``python -m leadflow.offload``, that imports only what its work needs.
Requests and results travel as pickles over its stdin and stdout; one thread per helper in
the caller feeds it, so the caller never blocks on a full pipe. Nothing in the calling
process changes (no ``gc.freeze``, no ``nice``): the same code is safe on the direct path,
in a flow run, and beside other threads.

Work is a module-level function of picklable arguments, called by reference.
``Offload(0)`` runs everything here, at once: callers write one code path and choose the
helper count from the size of the work.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import IO, Any, Self, TypeVar

T = TypeVar("T")
_LENGTH = struct.Struct("!Q")
_STOP = None


class HelperDied(BrokenProcessPool):
    """A helper process ended without answering (killed, out of memory)."""


def _send(stream: IO[bytes], value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - our own child's answer, over our own pipe


class _Helper:
    """One helper process and the thread that talks to it, a job at a time, in order."""

    def __init__(self, preload: Sequence[str]) -> None:
        self.jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None]
        self.jobs = queue.SimpleQueue()
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
            [sys.executable, "-m", "leadflow.offload", *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        self.thread = threading.Thread(target=self._serve, name="offload-helper", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        while (job := self.jobs.get()) is not _STOP:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                _send(stdin, (fn, args))
                ok, value = _receive(stdout)
            except (OSError, EOFError):
                future.set_exception(HelperDied(f"helper {self.process.pid} ended"))
                self._fail_the_rest()
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        with contextlib.suppress(OSError):
            _send(stdin, _STOP)

    def _fail_the_rest(self) -> None:
        while (job := self.jobs.get()) is not _STOP:
            if job[0].set_running_or_notify_cancel():
                job[0].set_exception(HelperDied(f"helper {self.process.pid} ended"))

    def close(self) -> None:
        self.jobs.put(_STOP)
        self.thread.join()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Offload(Executor):
    """``submit(fn, *args)`` runs in a helper process when there is one, else here (an
    ``Executor``, so ``loop.run_in_executor`` takes it too).

    Jobs go to the helpers in turn; with one helper they run in the order submitted.
    """

    def __init__(self, helpers: int, *, preload: Sequence[str] = ()) -> None:
        self._helpers: list[_Helper] = []
        self._turn = 0
        for _ in range(max(0, helpers)):
            try:
                self._helpers.append(_Helper(preload))
            except OSError:  # no processes here (limits): do the work in-line
                break

    @property
    def helpers(self) -> int:
        return len(self._helpers)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if kwargs:
            raise TypeError("Offload.submit takes positional arguments only")
        future: Future[T] = Future()
        if self._helpers:
            helper = self._helpers[self._turn % len(self._helpers)]
            self._turn += 1
            helper.jobs.put((future, fn, args))
            return future
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # the caller sees it from .result(), as from a helper
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the helpers once their queued work is done (``wait`` and ``cancel_futures``
        are accepted for ``Executor``; jobs already handed over always finish)."""
        helpers, self._helpers = self._helpers, []
        for helper in helpers:
            helper.close()

    def close(self) -> None:
        self.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


def _main(preload: Sequence[str]) -> None:
    """The helper: answer ``(fn, args)`` requests on stdin until told to stop."""
    import importlib

    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt answers
    for name in preload:
        importlib.import_module(name)
    while True:
        try:
            request = _receive(requests)
        except EOFError:
            return
        if request is _STOP:
            return
        fn, args = request
        try:
            answer: tuple[bool, Any] = (True, fn(*args))
        except Exception as exc:
            answer = (False, exc)
        _send(answers, answer)


if __name__ == "__main__":
    _main(sys.argv[1:])
