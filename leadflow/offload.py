"""Pure CPU work on other cores, in helper processes kept for one run.

Why not ``multiprocessing``: forking a process that has threads (a Prefect flow run has its
task runner's and the API client's) can copy a lock another thread holds into the child,
where nobody will ever release it; and its ``spawn`` and ``forkserver`` helpers re-import
the parent's ``__main__`` module (``prefect.engine`` in a flow run, a benchmark, a script
without a ``__main__`` guard, which then starts helpers of its own). So a helper here is a
fresh interpreter, ``python -m leadflow.offload``, that imports only what its work needs.
Requests and results travel as pickles over its stdin and stdout; two threads per helper in
the caller feed it and collect its answers, so the caller never blocks on a full pipe.
Nothing in the calling process changes (no ``gc.freeze``, no ``nice``): the same code is
safe on the direct path, in a flow run, and beside other threads.

Work is a module-level function of picklable arguments, called by reference.
``Offload(0)`` runs everything here, at once: callers write one code path and choose the
helper count from the size of the work. A caller with nothing else to do runs a job no
helper has started yet itself (``help_with``), so its own core is not left idle.
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


def _pack(value: object) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def _send(stream: IO[bytes], value: object) -> None:
    _write(stream, _pack(value))


def _write(stream: IO[bytes], packed: bytes) -> None:
    stream.write(packed)
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


class _Job:
    """One submitted call. It is taken once, by a helper's writer or by the caller
    (``Offload.help_with``), through an atomic ``dict.pop`` on the shared registry."""

    __slots__ = ("args", "fn", "future")

    def __init__(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.future, self.fn, self.args = future, fn, args

    def run_here(self) -> None:
        """Run the call in this process, its answer or error into the future."""
        try:
            self.future.set_result(self.fn(*self.args))
        except Exception as exc:  # the caller sees it from .result(), as from a helper
            self.future.set_exception(exc)


_Registry = dict[Future[Any], _Job]


def _take(registry: _Registry, job: _Job) -> bool:
    """Whether ``job`` is ours to run: nobody took it first and it was not cancelled."""
    if registry.pop(job.future, None) is None:
        return False
    return job.future.set_running_or_notify_cancel()


class _Helper:
    """One helper process and two threads that talk to it: the writer sends jobs in order,
    keeping up to ``AHEAD`` of them in the helper's pipe (so it starts the next job the moment
    it answers one, whatever the caller's threads are doing), the reader collects the answers.
    Two threads, because one that writes a big request while the helper writes a big answer
    would wait on a full pipe forever."""

    AHEAD = 2

    def __init__(self, preload: Sequence[str], registry: _Registry) -> None:
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._sent: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._slots = threading.Semaphore(self.AHEAD)
        self._registry = registry
        self._dead = False
        self._ready = threading.Event()  # set once the helper has imported its preload
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, this module
            [sys.executable, "-m", "leadflow.offload", *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        self.threads = [
            threading.Thread(target=self._write, name="offload-writer", daemon=True),
            threading.Thread(target=self._read, name="offload-reader", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _died(self) -> HelperDied:
        return HelperDied(f"helper {self.process.pid} ended")

    def _write(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        while (job := self.jobs.get()) is not _STOP:
            self._ready.wait()  # till then a job stays here, where the caller can still take it
            if not self._dead:
                self._slots.acquire()  # released by the reader, one per job it is handed
            if not _take(self._registry, job):
                if not self._dead:
                    self._slots.release()
                continue
            if self._dead:
                job.future.set_exception(self._died())
                continue
            try:
                packed = _pack((job.fn, job.args))
            except Exception as exc:  # arguments that cannot travel: this job's error only
                job.future.set_exception(exc)
                self._slots.release()
                continue
            self._sent.put(job)  # before sending: the reader fails it if the helper is gone
            try:
                _write(stdin, packed)
            except OSError:
                self._dead = True
        self._sent.put(_STOP)
        with contextlib.suppress(OSError):
            _send(stdin, _STOP)

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            _receive(stdout)  # "ready": its imports are done
        except (OSError, EOFError):
            self._dead = True
        self._ready.set()
        while (job := self._sent.get()) is not _STOP:
            try:
                if self._dead:
                    raise EOFError
                ok, value = _receive(stdout)
            except (OSError, EOFError):
                self._dead = True
                job.future.set_exception(self._died())
            else:
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)
            self._slots.release()

    def close(self) -> None:
        self.jobs.put(_STOP)
        for thread in self.threads:
            thread.join()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a dead helper's pipe: a request unsent
                    stream.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Offload(Executor):
    """``submit(fn, *args)`` runs in a helper process when there is one, else here (an
    ``Executor``, so ``loop.run_in_executor`` takes it too).

    Jobs go to the helpers in turn; with one helper they run in the order submitted. A caller
    that would only wait for a job no helper has started yet can run it itself
    (``help_with``): the work is then shared out by who is free, not decided in advance.
    """

    def __init__(self, helpers: int, *, preload: Sequence[str] = ()) -> None:
        self._helpers: list[_Helper] = []
        self._turn = 0
        self._registry: _Registry = {}
        for _ in range(max(0, helpers)):
            try:
                self._helpers.append(_Helper(preload, self._registry))
            except OSError:  # no processes here (limits): do the work in-line
                break

    @property
    def helpers(self) -> int:
        return len(self._helpers)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if kwargs:
            raise TypeError("Offload.submit takes positional arguments only")
        future: Future[T] = Future()
        job = _Job(future, fn, args)
        if self._helpers:
            helper = self._helpers[self._turn % len(self._helpers)]
            self._turn += 1
            self._registry[future] = job
            helper.jobs.put(job)
            return future
        future.set_running_or_notify_cancel()
        job.run_here()
        return future

    def help_with(self, future: Future[Any]) -> bool:
        """Run ``future``'s job here if no helper has taken it yet (True), rather than wait
        idle for it; False when a helper has it (or it is done)."""
        job = self._registry.get(future)
        if job is None or not _take(self._registry, job):
            return False
        job.run_here()
        return True

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
    _send(answers, (True, None))  # ready
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
