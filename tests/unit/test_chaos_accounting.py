"""`make chaos`'s accounting: a job that never finished is listed with its trace id and fails the run."""

from __future__ import annotations

import time

from tracehop.bench import chaos


class FakeChaos:
    """The stack-facing parts of Chaos replaced by what a run found (the accounting is what is tested)."""

    def __init__(self, requests: list[chaos.Request], states: dict[str, str], complete: set[str]) -> None:
        self.requests, self._states, self._complete = requests, states, complete

    def wait_for_jobs(self, job_ids):
        return {job_id: self._states.get(job_id, "PENDING") for job_id in job_ids}

    def complete_traces(self, trace_ids):
        return self._complete & set(trace_ids)


def request(index: int, window: str, status: int | str = 201) -> chaos.Request:
    return chaos.Request(
        index, float(index), status=status, job_id=f"job-{index}", trace_id=f"t{index}", window=window
    )


def test_a_pending_job_is_lost_listed_with_its_trace_and_traces_are_counted_per_window():
    fault = chaos.FaultResult(
        chaos.WORKER_KILLED, at_s=5.0, service_back_s=0.1, process_replaced_s=3.2, back_within_target=True
    )
    replay = request(4, fault.name)
    replay.replayed = True  # its job ran in an earlier attempt's trace: neither complete nor incomplete
    requests = [
        request(0, "baseline"),
        request(1, fault.name),
        request(2, fault.name),
        request(3, fault.name, 503),
        replay,
    ]
    states = {"job-0": "SUCCESS", "job-1": "SUCCESS", "job-2": "PENDING", "job-4": "SUCCESS"}
    fake = FakeChaos(requests, states, {"t0", "t1"})
    report = chaos.account(fake, [fault], [chaos.SHORT_FAULTS[0]], rate=10, duration=30, env={})  # type: ignore[arg-type]
    assert report["jobs"]["lost"] == [{"job_id": "job-2", "trace_id": "t2", "state": "PENDING"}]
    assert report["responses_by_status"] == {"201": 4, "503": 1}
    (window,) = report["faults"]
    counts = (window["requests"], window["traces_complete"], window["traces_incomplete"], window["replays"])
    assert counts == (3, 1, 1, 1)
    assert window["incomplete_examples"] == ["t2"]
    assert report["traces"]["baseline_complete"] == 1
    assert any("LOST job job-2" in line and "t2" in line for line in chaos.summary_lines(report))


class Replacing(chaos.Chaos):
    """Only what `_wait_recovered` asks the stack: the program's pid, which changes after a few asks."""

    def __init__(self, old_pid: int, new_after: int) -> None:
        self.asked = 0
        self.old_pid, self.new_after = old_pid, new_after

    def pid(self, program: str) -> int:
        self.asked += 1
        return self.old_pid if self.asked <= self.new_after else self.old_pid + 1


def failing_for(calls: int):
    count = iter(range(10**6))
    return lambda: "down" if next(count) < calls else None


def test_the_service_is_back_before_its_process_is_replaced_when_another_process_serves():
    # The other worker node runs the probe job at once; the killed node's new process answers later.
    chaos_ = Replacing(old_pid=100, new_after=4)
    back, replaced, unavailable = chaos_._wait_recovered(
        failing_for(0), failing_for(2), "worker", 100, time.monotonic()
    )
    assert back is not None and replaced is not None
    assert back < replaced
    assert unavailable == 0.0


def test_a_service_only_its_process_serves_is_back_when_its_probe_passes_again():
    # beat, an HTTP service: the readiness probe is the service check (beat's passes only for a new
    # process that has loaded its schedule), so the service is back when the new process is.
    readiness = failing_for(3)
    back, replaced, unavailable = Replacing(100, 1)._wait_recovered(
        readiness, readiness, "beat", 100, time.monotonic()
    )
    assert back == replaced is not None
    assert unavailable > 0  # the three failed probes


def test_a_kill_whose_service_came_back_late_is_shown_as_not_met():
    fault = chaos.FaultResult("users master SIGKILLed", 5.0, 2.6, 2.6, back_within_target=False)
    report = chaos.account(FakeChaos([], {}, set()), [fault], [], rate=10, duration=30, env={})  # type: ignore[arg-type]
    lines = chaos.summary_lines(report)
    assert "service back within 2 s: 0 of 1 kills; NOT MET: users master SIGKILLed" in lines
    table = chaos.report_table(report)
    assert [cell for cell in table.columns[3].cells] == ["", "NOT MET"]


def test_the_service_is_back_only_after_its_last_failure():
    # An orphaned worker answers at first, stops before the new master serves: back is the LAST recovery.
    answers = iter([None, "down", "down", None, None])
    back, replaced, unavailable = Replacing(100, 1)._wait_recovered(
        lambda: next(answers), failing_for(0), "users", 100, time.monotonic()
    )
    assert replaced is not None and back is not None
    assert back > replaced  # replaced at the second check, back at the fourth
    assert unavailable > 0
