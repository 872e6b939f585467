"""Benchmark the whole send path against raw aiosmtplib, both to a loopback aiosmtpd sink.

    python -m benchmarks.bench_send [--messages 5000] [--batch-size 2000] [--concurrency 4]
                                    [--sink process|thread] [--profile] [--repeat N]

Full path: ``engine.deliver_due``, the nurture step of every run: ``engine.outbox_ranges``
plans the batches, then one ``DeliverySession`` claims each batch's due rows (committed UPDATEs,
a slice at a time), renders each email (sandboxed Jinja, CSS inlining), builds the MIME message,
sends it over one ``SmtpTransport`` pool and records every outcome (plus the next cadence step)
a chunk at a time. The database is SQLite in a temporary folder, seeded with enrolled leads
whose first step is due.

Baseline: the very bytes the sink received from the full path, sent again with aiosmtplib
``sendmail`` by the same number of workers over persistent connections to a fresh sink, on
asyncio's own loop (``ratio``), and once more on uvloop (``ratio_vs_raw_uvloop``): the full path
runs on uvloop by default (``LEADFLOW_EVENT_LOOP``, see ``leadflow.eventloop``), and the
second ratio shows that the loop's saving is not what carries the first.

The sink (``leadflow.mail.sink.SmtpSink``, no directory) runs in a process of its own by
default, as a real relay would; ``--sink thread`` runs it in this process, where it competes
with the sender for the GIL. Output: one JSON line (throughputs, ratio, the CPU seconds of the
sending process for both, and the seconds the full path spent per delivery step: claim and
record, which run on a database thread beside the sending, compose_and_send, the wall time of
everything after the first claim, and the compose part of it), then one line for people.
``--profile`` runs the full path under cProfile and prints the top functions by cumulative and
own time to stderr. ``--repeat N`` runs the whole comparison N times and reports the run with
the median ratio (plus every ratio): on a machine shared with other work one run says little.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import multiprocessing
import pstats
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import yaml
from aiosmtplib import SMTP
from sqlalchemy import Engine

from benchmarks.common import CONFIG, ROOT, TEMPLATES, temporary_prefect
from leadflow.config import load_config
from leadflow.delivery import batch
from leadflow.delivery.compose import Composer
from leadflow.delivery.outcome import DeliveryOutcome
from leadflow.delivery.smtp import smtp_transport_factory
from leadflow.eventloop import run_async
from leadflow.mail.sink import SmtpSink
from leadflow.pipeline import engine as pipeline
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.db import open_database

sys.path.insert(0, str(ROOT / "tests"))
from seeding import enrolled_lead, seed_due_intros

NOW = datetime(2026, 11, 3, 14, 30, tzinfo=UTC)  # Tuesday 09:30 in New York: in the window
DOMAINS = ("example.com", "example.org", "example.net", "mail.example")
TARGET = 0.75  # of raw aiosmtplib's rate, through the flow as directly


def uncapped_config(messages: int) -> str:
    """The default pipeline with caps and pacing out of the way (they are policy, not speed)."""
    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    data["sender"].update(
        daily_cap=max(messages, 1) * 2, per_domain_daily_cap=None, per_minute=10**9
    )
    return yaml.safe_dump(data, sort_keys=False)


def seed(engine: Engine, messages: int) -> None:
    """Enrolled leads in ``prospect`` with step ``intro`` of ``outbound`` due at ``NOW``."""
    leads = [
        enrolled_lead(
            f"lead{n}@{DOMAINS[n % len(DOMAINS)]}",
            now=NOW,
            first_name=f"Lead{n}",
            last_name="Example",
            company=f"Company {n % 97}",
            industry="saas",
        )
        for n in range(messages)
    ]
    seed_due_intros(engine, leads, now=NOW)


PHASES: dict[str, tuple[Any, str]] = {  # delivery's steps, timed by wrapping what it calls
    "claim": (batch, "claim_batch"),
    # wall time of claiming (after the first slice), building, sending and recording, which
    # overlap; claim and record are timed on the database thread where they run
    "compose_and_send": (batch.BatchRun, "run"),
    # of which this process spent rendering and building (0 when a forked helper builds)
    "compose": (Composer, "__call__"),
    "record": (batch, "record_results"),
}


@contextmanager
def phase_timer() -> Iterator[dict[str, float]]:
    """Seconds spent in each delivery step while the context is open."""
    spent = dict.fromkeys(PHASES, 0.0)
    originals = {name: getattr(owner, attr) for name, (owner, attr) in PHASES.items()}

    def wrap(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed_step(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = function(*args, **kwargs)
                if asyncio.iscoroutine(result):
                    return _timed_coroutine(name, result, spent, start)
                return result
            finally:
                spent[name] += time.perf_counter() - start

        return timed_step

    for name, (owner, attr) in PHASES.items():
        setattr(owner, attr, wrap(name, originals[name]))
    try:
        yield spent
    finally:
        for name, (owner, attr) in PHASES.items():
            setattr(owner, attr, originals[name])


async def _timed_coroutine(
    name: str, coroutine: Any, spent: dict[str, float], started: float
) -> Any:
    spent[name] -= time.perf_counter() - started  # count the await, not the call
    start = time.perf_counter()
    try:
        return await coroutine
    finally:
        spent[name] += time.perf_counter() - start


Path_ = Literal["direct", "flow"]


def full_path(rt: Runtime) -> DeliveryOutcome:
    """The nurture step of a tick (``engine.tick``): every due batch through one session."""
    return pipeline.deliver_due(rt, now=NOW, kind="cadence", transport=smtp_transport_factory(rt))


def flow_path(settings: Settings) -> DeliveryOutcome:
    """The same step as production runs it: the ``nurture`` Prefect flow, in this process
    (``leadflow run nurture``), against the temporary Prefect server ``prefect_home`` set up."""
    from flows.runner import run_flows

    result = run_flows(["nurture"], now=NOW, settings=settings)["nurture"]["nurture"]
    out = DeliveryOutcome(claimed=result["claimed"], render_failed=result["render_failed"])
    out.statuses.update(result["statuses"])
    return out


Received = tuple[str, tuple[str, ...], bytes]  # MAIL FROM, RCPT TOs, payload as received


class Sink:
    """A running ``SmtpSink``: its port, and what it received so far."""

    def __init__(self, port: int, take: Callable[[], list[Received]]) -> None:
        self.port = port
        self.take = take


def _sink_process(conn: Connection) -> None:
    """Child process: run a sink, answer "take" with its messages, exit on "stop"."""
    with SmtpSink() as sink:
        conn.send(sink.port)
        while conn.recv() == "take":
            conn.send([(m.mail_from, m.recipients, m.data) for m in sink.messages])


@contextmanager
def running_sink(where: Literal["process", "thread"]) -> Iterator[Sink]:
    if where == "thread":
        with SmtpSink() as sink:
            yield Sink(
                sink.port, lambda: [(m.mail_from, m.recipients, m.data) for m in sink.messages]
            )
        return
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_sink_process, args=(child,))
    process.start()
    try:
        port: int = parent.recv()

        def take() -> list[Received]:
            parent.send("take")
            received: list[Received] = parent.recv()
            return received

        yield Sink(port, take)
    finally:
        parent.send("stop")
        process.join(10)


async def raw_send(port: int, messages: list[Received], concurrency: int) -> None:
    """aiosmtplib alone: ``concurrency`` persistent connections sharing one queue."""
    queue: asyncio.Queue[Received] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)

    async def worker() -> None:
        smtp = SMTP(hostname="127.0.0.1", port=port, timeout=30)
        await smtp.connect()
        try:
            while not queue.empty():
                mail_from, recipients, data = queue.get_nowait()
                await smtp.sendmail(mail_from, list(recipients), data)
        finally:
            await smtp.quit()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(action: Callable[[], Any], cpu: list[float] | None = None) -> tuple[float, Any]:
    """Wall seconds of ``action``; appends this process's CPU seconds to ``cpu`` if given."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = action()
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    return time.perf_counter() - start, result


def profiled(action: Callable[[], DeliveryOutcome]) -> DeliveryOutcome:
    profile = cProfile.Profile()
    result: DeliveryOutcome = profile.runcall(action)
    for order in ("cumulative", "tottime"):
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats(order).print_stats(25)
        print(text.getvalue(), file=sys.stderr)
    return result


def run(
    messages: int,
    batch_size: int,
    concurrency: int,
    *,
    sink: Literal["process", "thread"],
    profile: bool,
    path: Path_ = "direct",
) -> dict[str, Any]:
    cpu: list[float] = []
    children: list[float] = [_children_cpu()]
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-send-") as tmp:
        config = Path(tmp) / "pipeline.yaml"
        config.write_text(uncapped_config(messages), encoding="utf-8")
        loaded = load_config(config, templates=TEMPLATES)
        with running_sink(sink) as full_sink:
            settings = Settings(
                home=Path(tmp),
                database_url=f"sqlite:///{Path(tmp) / 'bench.db'}",
                config=config,
                templates=TEMPLATES,
                demo=True,
                smtp_host="127.0.0.1",
                smtp_port=full_sink.port,
                smtp_concurrency=concurrency,
                batch_size=batch_size,
            )
            rt = Runtime(settings=settings, loaded=loaded, engine=open_database(settings.db_url))
            try:
                if path == "flow":
                    flow_path(settings)  # untimed: the flow's start-up (server, imports)
                seed(rt.engine, messages)

                def send_one_way() -> DeliveryOutcome:
                    return flow_path(settings) if path == "flow" else full_path(rt)

                def send_all() -> DeliveryOutcome:
                    return profiled(send_one_way) if profile else send_one_way()

                with phase_timer() as phases:
                    full_s, outcome = timed(send_all, cpu)
            finally:
                rt.close()
            prepared = full_sink.take()
        children.append(_children_cpu())
        if outcome.statuses.get("sent", 0) != messages or len(prepared) != messages:
            raise SystemExit(f"full path sent {outcome.summary()}; sink got {len(prepared)}")
        with running_sink(sink) as raw_sink:
            raw_s, _ = timed(
                lambda: asyncio.run(raw_send(raw_sink.port, prepared, concurrency)), cpu
            )
            if len(raw_sink.take()) != messages:
                raise SystemExit("raw aiosmtplib did not deliver every message")
        children.append(_children_cpu())
        # the same, on uvloop: the loop the full path runs on by default (LEADFLOW_EVENT_LOOP)
        with running_sink(sink) as uv_sink:
            raw_uv_s, _ = timed(
                lambda: run_async(raw_send(uv_sink.port, prepared, concurrency), "uvloop")
            )
            if len(uv_sink.take()) != messages:
                raise SystemExit("raw aiosmtplib on uvloop did not deliver every message")
    full_rate, raw_rate = messages / full_s, messages / raw_s
    return {
        "benchmark": "send",
        "path": path,
        "messages": messages,
        "batch_size": batch_size,
        "concurrency": concurrency,
        "sink": sink,
        "full_path_s": round(full_s, 3),
        "raw_smtp_s": round(raw_s, 3),
        # CPU seconds of this process (the sender; the sink is not counted): what is left
        # when the sink or other load on the machine is the limit
        "full_path_cpu_s": round(cpu[0], 3),
        "raw_smtp_cpu_s": round(cpu[1], 3),
        # CPU seconds of the processes this one started and waited for: the sink (with
        # ``--sink process``) and, on the full path, any forked building helper
        "full_path_children_cpu_s": round(children[1] - children[0], 3),
        "raw_smtp_children_cpu_s": round(children[2] - children[1], 3),
        "full_path_per_s": round(full_rate, 1),
        "raw_smtp_per_s": round(raw_rate, 1),
        "ratio": round(full_rate / raw_rate, 3),
        # raw aiosmtplib on uvloop too, so the loop's own saving is not counted as ours
        "raw_smtp_uvloop_per_s": round(messages / raw_uv_s, 1),
        "ratio_vs_raw_uvloop": round(full_s and raw_uv_s / full_s, 3),
        "event_loop": settings.event_loop,
        "full_path_phases_s": {name: round(value, 3) for name, value in phases.items()},
        "target": TARGET,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=5000)
    defaults = Settings.model_fields  # the product's defaults are the realistic setting
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults["batch_size"].default,
        help="Settings.batch_size (default: %(default)s, as in production)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=defaults["smtp_concurrency"].default,
        help="Settings.smtp_concurrency (default: %(default)s, as in production)",
    )
    parser.add_argument(
        "--sink",
        choices=("process", "thread"),
        default="process",
        help="run the sink in its own process (as a real relay is) or in a thread of this one",
    )
    parser.add_argument(
        "--path",
        choices=("direct", "flow", "both"),
        default="both",
        help="the engine step called here, the nurture Prefect flow, or both (interleaved)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the full path")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs; the one with the median ratio is reported"
    )
    args = parser.parse_args(argv)
    paths: list[Path_] = ["direct", "flow"] if args.path == "both" else [args.path]
    with ExitStack() as stack:
        if "flow" in paths:
            stack.enter_context(temporary_prefect())
        runs: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
        for _ in range(max(1, args.repeat)):  # the paths alternate, so both see the same box
            for path in paths:
                runs[path].append(
                    run(
                        args.messages,
                        args.batch_size,
                        args.concurrency,
                        sink=args.sink,
                        profile=args.profile,
                        path=path,
                    )
                )
    results = {path: _median_run(found) for path, found in runs.items()}
    for result in results.values():
        print(json.dumps(result))
        _say(result)
    if len(results) == 2:
        direct, flow = results["direct"]["ratio"], results["flow"]["ratio"]
        within = abs(flow - direct) <= 0.1 * direct
        print(
            json.dumps({"benchmark": "send", "flow_vs_direct": round(flow / direct, 3)})
            + f"\nsend through the nurture flow: {flow / direct:.2f} of the direct path's rate "
            f"({'within' if within else 'NOT within'} 10%)"
        )


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median ratio, plus every ratio (one run on a shared box says little)."""
    runs = sorted(runs, key=lambda r: float(r["ratio"]))
    result = runs[len(runs) // 2]
    return {**result, "ratios": [r["ratio"] for r in runs]} if len(runs) > 1 else result


def _say(result: dict[str, Any]) -> None:
    verdict = "meets" if result["ratio"] >= TARGET else "below"
    print(
        f"send ({result['path']}): {result['messages']} messages, batches of "
        f"{result['batch_size']}, {result['concurrency']} connections, sink in a "
        f"{result['sink']}: full path {result['full_path_per_s']:.0f}/s, "
        f"raw aiosmtplib {result['raw_smtp_per_s']:.0f}/s, ratio {result['ratio']:.2f} "
        f"({verdict} the {TARGET} target); raw aiosmtplib on uvloop "
        f"{result['raw_smtp_uvloop_per_s']:.0f}/s, ratio {result['ratio_vs_raw_uvloop']:.2f}"
    )


if __name__ == "__main__":
    main()
