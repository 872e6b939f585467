"""``leadflow serve``: one deployment per flow, on the crons of pipeline.yaml.

Each deployment has a concurrency limit of one with the ENQUEUE strategy: a run that is due
while the previous run of the same flow still holds the slot waits (state
``AwaitingConcurrencySlot``, looked at again every 30 s) instead of running beside it, so a
run started by a person from the UI is never dropped because a cron-fired run was pending;
the outbox claim in the database is the guarantee behind it. The crons are read in
``schedules.timezone`` (UTC by default), the zone ``prefect.yaml`` declares too. Restarting
``serve`` after editing a cron replaces the schedule (a removed cron removes it). See
docs/orchestration.md.

Stopping is bounded whatever the Prefect API does. Prefect's client retries a request to a
server it has reached before for about a minute (five retries, exponential back-off), and its
runner pauses every schedule through the API when it stops, so with the server gone SIGTERM
used to take ~75 s and end in a traceback. Here SIGTERM (or SIGINT) first asks the API for
``/health`` (at most ``STOP_CHECK_SECONDS``): if it answers, Prefect's own graceful stop runs
(flow runs cancelled, schedules paused, exit 0); if not, the schedules are left as they are,
the runner is cancelled at once and serve exits 1 with one line saying so. Either way the
runner is cancelled ``STOP_GRACE_SECONDS`` after the signal, and the process leaves
``EXIT_SECONDS`` after that even if a clean-up hangs. A signal while the temporary server
starts (no PREFECT_API_URL) stops it and exits 0. At start, a PREFECT_API_URL that does not
answer ``/health`` within ``START_CHECK_SECONDS`` is one line of error (exit 1), not a retry loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from types import FrameType
from typing import Any, Self

import anyio
import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.logging import get_logger
from prefect.runner import Runner
from prefect.schedules import Cron
from prefect.settings import get_current_settings

from flows.context import use_settings
from flows.pipeline import FLOWS
from flows.runner import SERIAL_TASKS_ENV, api_url, uses_sqlite
from leadflow.config.schema import PipelineConfig
from leadflow.settings import Settings

START_CHECK_SECONDS = 15.0  # how long PREFECT_API_URL may take to answer /health at start
STOP_CHECK_SECONDS = 3.0  # the same on SIGTERM: no answer, no pausing through it
STOP_GRACE_SECONDS = 15.0  # from the signal to cancelling the runner, whatever it waits for
CANCEL_AGAIN_SECONDS = 1.0  # a cancelled runner still running is cancelled again this often
EXIT_SECONDS = 10.0  # from cancelling the runner to leaving without further clean-up

log = get_logger("leadflow.serve")


class PrefectUnavailable(Exception):
    """The Prefect API did not answer or failed: one line naming where (and what to do)."""


# One run of a flow at a time; a run due meanwhile waits for the slot (never cancelled).
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def build_deployments(config: PipelineConfig) -> list[Any]:
    deployments = []
    timezone = config.schedules.timezone  # not the leads' default zone (config.timezone)
    for name, flow in FLOWS.items():
        cron = getattr(config.schedules, name)
        schedules = [Cron(cron, timezone=timezone)] if cron else []
        deployments.append(
            flow.to_deployment(
                name=f"leadflow-{name}",
                schedules=schedules,
                tags=["leadflow", name],
                description=flow.description,
                concurrency_limit=ONE_AT_A_TIME,
            )
        )
    return deployments


# Prefect keeps deployment-concurrency leases in server memory by default: if the server stops
# while a run holds its deployment's slot and that run never reports an end (a crash, a
# reboot), the slot stays taken after the restart and every later run of that flow is
# cancelled. Leases kept on disk (under PREFECT_HOME) survive a restart and expire instead
# (at most ~5 min after the run's last renewal). Without PREFECT_API_URL the server is the
# temporary one this process starts, so the setting must be in the environment before then.
FILE_LEASES = "prefect.server.concurrency.lease_storage.filesystem"


def serve_all(settings: Settings, config: PipelineConfig) -> None:
    """Register the deployments and serve them until SIGTERM or SIGINT.

    Raises ``PrefectUnavailable`` when the Prefect API does not answer at start, when
    registering fails on the API, or when a stop could not pause the schedules."""
    os.environ.setdefault("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", FILE_LEASES)
    if uses_sqlite(settings):  # served runs import the flows afresh, in subprocesses
        os.environ.setdefault(SERIAL_TASKS_ENV, "1")
    use_settings(settings)
    deployments = build_deployments(config)
    if api_url() is None:
        try:
            _start_temporary_server()
        except _Interrupted:
            return
    asyncio.run(_serve(deployments))


class _Interrupted(BaseException):
    """SIGTERM or SIGINT while the temporary server starts: nothing is served yet."""


def _signals() -> list[signal.Signals]:
    """The signals that stop ``serve``; a background job's ignored SIGINT (``&``, nohup)
    stays ignored."""
    return [s for s in (signal.SIGTERM, signal.SIGINT) if signal.getsignal(s) is not signal.SIG_IGN]


def _start_temporary_server() -> None:
    """Start the temporary Prefect server (no PREFECT_API_URL) before the event loop runs.

    Prefect starts it on first use, waiting synchronously for its health (8-40 s, up to
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS) inside whatever called: in the event
    loop no signal would be handled until it answers. Here a signal interrupts the wait."""
    from prefect.server.api.server import SubprocessASGIServer

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in _signals()}
    try:
        with get_client(sync_client=True) as client:
            failure = client.api_healthcheck()
    except _Interrupted:
        log.info("stopped while the temporary Prefect server was starting")
        SubprocessASGIServer().stop()  # also registered with atexit, once it has a process
        raise
    except (RuntimeError, httpx.HTTPError) as exc:  # e.g. its start-up timed out
        failure = exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure is not None:
        raise PrefectUnavailable(
            f"the temporary Prefect server did not start ({_one_line(failure)}); raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or run `prefect server start` "
            "and set PREFECT_API_URL"
        )


def _where(url: str | None) -> str:
    return f"the Prefect API at {url}" if url else "the temporary Prefect server"


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


async def _unhealthy(timeout: float) -> str | None:
    """Why the API does not answer ``/health`` within ``timeout`` seconds, or None if it does."""
    failure: BaseException | None
    try:
        with anyio.fail_after(timeout):
            async with get_client() as client:
                failure = await client.api_healthcheck()
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except Exception as exc:  # anything on the way to /health is an answer of its own
        failure = exc
    return None if failure is None else _one_line(failure)


class _Runner(Runner):
    """Prefect's runner, whose SIGTERM handler (installed by ``start``) is leadflow's."""

    def __init__(self, stop: _Stop, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._leadflow_stop = stop

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        self._leadflow_stop.on_signal(signal.SIGTERM, None)

    async def __aenter__(self) -> Self:
        started = await super().__aenter__()
        log.info("serving; SIGTERM or SIGINT stops (at most %g s)", STOP_GRACE_SECONDS)
        return started


class _Stop:
    """What SIGTERM and SIGINT do while ``serve`` runs (see the module docstring).

    The signal handler only hands the signal over to the event loop; everything else runs on
    the loop. A second signal cancels the runner without waiting any longer."""

    def __init__(self, main: asyncio.Task[None], url: str | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.main = main
        self.url = url
        self.runner: Runner | None = None
        self.signalled: str | None = None
        self.failure: str | None = None  # why the stop was not clean: the error serve exits with
        self._previous: dict[signal.Signals, Any] = {}
        self._stopping: asyncio.Task[None] | None = None
        self._cancelling = False

    def install(self) -> None:
        for sig in _signals():
            self._previous[sig] = signal.signal(sig, self.on_signal)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        # A Python signal handler runs between two bytecodes of the main thread, possibly in
        # the middle of the loop's own code: only schedule the work.
        self.loop.call_soon_threadsafe(self.request, signal.Signals(signum).name)

    def request(self, name: str) -> None:
        if self.main.done():
            return
        if self.signalled is not None:
            self._give_up(f"{name} received again")
            return
        self.signalled = name
        runner = self.runner
        if runner is None or not runner.started:  # still registering: nothing is served yet
            log.info("%s received before serving started: stopping", name)
            self._cancel()
            return
        log.info("%s received: stopping (at most %g s)", name, STOP_GRACE_SECONDS)
        self.loop.call_later(
            STOP_GRACE_SECONDS, self._give_up, f"still stopping after {STOP_GRACE_SECONDS:g} s"
        )
        self._stopping = self.loop.create_task(self._stop(runner))

    async def _stop(self, runner: Runner) -> None:
        problem = await _unhealthy(STOP_CHECK_SECONDS)
        if problem is None:
            # Prefect's graceful stop: cancel the flow runs, end the polling; ``start`` then
            # pauses the schedules on its way out.
            try:
                await runner.astop()
            except Exception as exc:
                self._give_up(f"Prefect's stop failed ({_one_line(exc)})")
            return
        # Cancelling the runs and pausing the schedules go through the API, where Prefect
        # would retry each call for about a minute: skip both and cancel the runner now (its
        # flow-run processes are terminated as their tasks are cancelled).
        runner.pause_on_shutdown = False
        self.failure = (
            f"stopped without pausing the schedules: {_where(self.url)} "
            f"cannot be reached ({problem})"
        )
        self._cancel()

    def _give_up(self, why: str) -> None:
        if self.main.done():
            return
        if self.failure is None:
            self.failure = (
                f"stopped before Prefect's graceful stop finished ({why}): the schedules may "
                f"not be paused; check {_where(self.url)}"
            )
        log.warning("%s: cancelling the runner", why)
        self._cancel()

    def _cancel(self) -> None:
        """Cancel the runner, again every ``CANCEL_AGAIN_SECONDS`` while it has not ended (a
        clean-up waiting on a server that does not answer is abandoned), and leave the
        process ``EXIT_SECONDS`` after the first time whatever still runs."""
        if self.main.done():
            return
        if not self._cancelling:
            self._cancelling = True
            self.loop.call_later(EXIT_SECONDS, self._leave)
        self.main.cancel()
        self.loop.call_later(CANCEL_AGAIN_SECONDS, self._cancel)

    def _leave(self) -> None:
        reason = self.failure or "stopped"
        print(
            f"error: {reason}; the clean-up had not finished {EXIT_SECONDS:g} s after "
            "cancelling the runner: leaving without it",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)


async def _serve(deployments: list[Any]) -> None:
    main = asyncio.current_task()
    assert main is not None
    url = api_url()
    stop = _Stop(main, url)
    stop.install()
    try:
        await _register_and_run(stop, deployments, url)
    except asyncio.CancelledError:
        if stop.signalled is None:
            raise
    except PrefectUnavailable:
        if stop.failure is None:
            raise
    finally:
        stop.uninstall()
    if stop.failure is not None:
        raise PrefectUnavailable(stop.failure)


async def _register_and_run(stop: _Stop, deployments: list[Any], url: str | None) -> None:
    if url is not None:
        problem = await _unhealthy(START_CHECK_SECONDS)
        if problem is not None:
            raise PrefectUnavailable(
                f"{_where(url)} cannot be reached ({problem}); check PREFECT_API_URL and that "
                "the server runs (`prefect server start`), or unset PREFECT_API_URL to let "
                "serve start a temporary server"
            )
    runner = _Runner(stop, pause_on_shutdown=True, limit=None)  # as prefect.serve: no limit
    step = "registering the deployments"
    try:
        for deployment in deployments:
            await runner.aadd_deployment(deployment)
        _announce(deployments)
        stop.runner = runner
        step = "serving"
        await runner.start()
    except Exception as exc:
        cause = _api_error(exc)
        if cause is None:
            raise
        raise PrefectUnavailable(f"{step} failed on {_where(url)} ({_one_line(cause)})") from exc


def _announce(deployments: list[Any]) -> None:
    """What ``prefect.serve`` prints at start (its printer is private to Prefect): the
    deployments served and how to run one now."""
    lines = ["Serving these deployments, polling for their scheduled runs:"]
    lines += [f"  {d.flow_name}/{d.name}" for d in deployments]
    lines.append("Run one now with: prefect deployment run <flow>/<deployment>")
    ui = get_current_settings().ui_url
    if ui:
        lines.append(f"or from the Prefect UI: {ui}/deployments")
    print("\n".join(lines), flush=True)


def _api_error(exc: BaseException) -> httpx.HTTPError | None:
    """The HTTP error behind ``exc`` (Prefect wraps some, e.g. "Runner failed to start")."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.HTTPError):
            return seen
        seen = seen.__cause__
    return None
