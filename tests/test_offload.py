"""Helper processes for CPU work: same answers as in-process, errors and deaths reported."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from leadflow.offload import HelperDied, Offload


def test_jobs_in_a_helper_answer_as_they_would_in_process() -> None:
    with Offload(1) as helped, Offload(0) as inline:
        assert helped.helpers == 1 and inline.helpers == 0
        futures = [helped.submit(divmod, n, 7) for n in range(50)]
        assert [f.result(timeout=60) for f in futures] == [
            inline.submit(divmod, n, 7).result() for n in range(50)
        ]


def test_an_error_in_a_job_is_raised_by_its_result_and_the_helper_goes_on() -> None:
    with Offload(1) as offload:
        failing = offload.submit(int, "not a number")
        after = offload.submit(int, "42")
        with pytest.raises(ValueError, match="not a number"):
            failing.result(timeout=60)
        assert after.result(timeout=60) == 42


def test_a_killed_helper_fails_its_jobs_with_helper_died() -> None:
    with Offload(1) as offload:
        pid = offload.submit(os.getpid).result(timeout=60)
        assert pid != os.getpid()  # a process of its own
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(HelperDied):
            offload.submit(os.getpid).result(timeout=60)
        with pytest.raises(HelperDied):
            offload.submit(os.getpid).result(timeout=60)


def test_helpers_start_beside_other_threads_and_share_out_the_jobs() -> None:
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait)  # as in a Prefect flow run: other threads exist
    busy.start()
    try:
        with Offload(2) as offload:
            pids = {offload.submit(os.getpid).result(timeout=60) for _ in range(4)}
        assert len(pids) == 2 and os.getpid() not in pids
    finally:
        stop.set()
        busy.join()
