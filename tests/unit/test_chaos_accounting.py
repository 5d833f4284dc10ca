"""`make chaos`'s accounting: a job that never finished is listed with its trace id and fails the run."""

from __future__ import annotations

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
    fault = chaos.FaultResult("worker main process SIGKILLed", at_s=5.0, recovery_s=2.0)
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
