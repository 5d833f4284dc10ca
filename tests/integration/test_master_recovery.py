"""A gunicorn master SIGKILLed (users, then gateway) under a steady stream of requests, on a private stack:
the service answers throughout, the orphaned workers stop once the new master's workers serve, `status`
never calls the new master RUNNING before its own workers listen, and nothing is left behind.

What "answers throughout" means here, honestly: every request is answered, at worst after ONE immediate
retry with the same Idempotency-Key; at most one first attempt fails (a connection the kernel queued on
a listener in the moment before it closed is reset: services/web/worker_listeners.py); no worker crashes
(the gateway's door did as it stopped with a connection queued: public_door.leave_port); and the
longest time without an answer stays well under the 2 s of issue 14. Before this change users had
3.2 s requests (connections queued on new workers still loading the app) and resets when its orphans
stopped, and the gateway answered nobody for ~5 s (gunicorn's gevent worker exits with its master).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import requests

from services.web.listening_sockets import listens_on
from tests.integration.fault_tools import Programs
from tests.integration.stack import RunningStack, private_stack, start_private_stack
from tests.waiting import eventually
from tracehop.stack.processes import children, group_members, process_exists
from tracehop.stack.runner import NOT_SERVING

# Longer than any boot on a loaded machine: orphans that stop before it ends stopped because they saw
# the new master's workers serve, not because their time was up.
ORPHAN_GRACE_S = 120.0
ENV = {
    "GUNICORN_WORKERS": "2",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "TRACEHOP_MAIL_LATENCY_MS": "1",
    "TRACEHOP_ORPHAN_GRACE_S": str(ORPHAN_GRACE_S),
}
STREAMS = 4
# From the kill until the orphans are gone, on the killed service's /healthz: the longest time without an
# answer, and the slowest answer. A request waiting on a listener nobody accepts from yet takes as long as
# a worker's boot (3.2 s in the first measurement, 3-19 s under load); measured with this change in six
# runs at load averages 4-20: gaps of 0.15-0.81 s, answers under 0.85 s. The bounds leave room for this
# shared machine's load and stay under issue 14's 2 s.
LONGEST_GAP_S = 1.5
# The gunicorn programs' stopwaitsecs (tracehop/stack/supervisord_conf.py): a stop the master never hears
# ends in supervisord's SIGKILL after it.
STOPWAITSECS_S = 20
SLOWEST_S = 1.5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with private_stack(tmp_path_factory.mktemp("master-recovery"), ENV) as running:
        yield running


@dataclass
class Stream:
    """Threads sending requests, each on a new connection (so each one is a new pick among the port's
    listeners), each retried once at once on failure: half create users through the gateway (the whole
    path, users included), half ask the killed service's own /healthz (its listeners, nothing else)."""

    gateway: str
    service: str
    answered_at: list[float] = field(default_factory=list)
    attempts: list[tuple[float, float, str, str]] = field(default_factory=list)  # started, s, call, outcome
    first_failures: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Stream:
        calls = [self._create_user, self._health] * (STREAMS // 2)
        self._threads = [threading.Thread(target=self._run, args=(call,), daemon=True) for call in calls]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, call: Callable[[str], requests.Response]) -> None:
        while not self._stop.is_set():
            key = str(uuid.uuid4())
            outcome = self._attempt(call, key)
            if outcome != "ok":
                self.first_failures.append(outcome)
                outcome = self._attempt(call, key)
                if outcome != "ok":
                    self.lost.append(outcome)
            time.sleep(0.02)

    def _create_user(self, key: str) -> requests.Response:
        return requests.post(
            f"{self.gateway}/api/users",
            json={"name": "Ada", "email": f"ada-{key[:8]}@example.org"},
            headers={"Idempotency-Key": key, "Connection": "close"},
            timeout=10,
        )

    def _health(self, key: str) -> requests.Response:
        return requests.get(f"{self.service}/healthz", headers={"Connection": "close"}, timeout=10)

    def _attempt(self, call: Callable[[str], requests.Response], key: str) -> str:
        started = time.monotonic()
        try:
            response = call(key)
        except requests.RequestException as error:
            outcome = f"{type(error).__name__}: …{str(error)[-60:]}"
        else:
            outcome = "ok" if response.status_code in (200, 201) else f"HTTP {response.status_code}"
        ended = time.monotonic()
        self.attempts.append((started, ended - started, call.__name__, outcome))
        if outcome == "ok":
            self.answered_at.append(ended)
        return outcome

    def failed_attempts(self, since: float) -> list[str]:
        """For a failure's message: every failed attempt, timed from `since` and on the wall clock (UTC,
        as the services' logs), so that it can be laid beside their lines."""
        to_wall = time.time() - time.monotonic()
        return [
            f"{call} at +{started - since:.3f} s "
            f"({time.strftime('%H:%M:%S', time.gmtime(started + to_wall))}"
            f".{int((started + to_wall) % 1 * 1e6):06d}Z, {seconds:.3f} s): {outcome}"
            for started, seconds, call, outcome in self.attempts
            if outcome != "ok"
        ]

    def slowest_health(self, since: float) -> float:
        return max(s for started, s, call, _ in self.attempts if started >= since and call == "_health")

    def slow_attempts(self, since: float, over: float = 0.5) -> list[str]:
        """For a failure's message: attempts slower than `over`, timed from `since`."""
        return [
            f"{call} at +{started - since:.2f} s: {seconds:.2f} s, {outcome}"
            for started, seconds, call, outcome in self.attempts
            if started >= since - 1 and seconds > over
        ]

    def longest_health_gap(self, since: float) -> float:
        times = sorted(
            started + s
            for started, s, call, outcome in self.attempts
            if started + s >= since and call == "_health" and outcome == "ok"
        )
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=float("inf"))


def serving_workers(master: int, port: int) -> list[int]:
    return [child for child in children(master) if listens_on(child, port)]


@pytest.mark.parametrize("program", ["users", "gateway"])
def test_a_killed_master_costs_no_answer(stack: RunningStack, program: str):
    programs = Programs(stack.stack)
    port = getattr(stack.stack.ports, program)
    old_master = programs.pid(program)
    orphans = eventually(lambda: serving_workers(old_master, port), 30, f"{program}'s workers listening")
    with Stream(stack.gateway, stack.stack.urls[program]) as stream:
        eventually(lambda: len(stream.answered_at) >= 10, 30, "the stream answered")
        killed_at = time.monotonic()
        os.kill(old_master, signal.SIGKILL)
        # Reported, not asserted: on a fast machine the new workers may serve within supervisord's 2 s of
        # STARTING, so `status` never has a RUNNING master to call NOT SERVING.
        seen_orphans_answer_for_it = False
        deadline = killed_at + ORPHAN_GRACE_S - 5
        while any(process_exists(pid) for pid in orphans):
            assert time.monotonic() < deadline, f"{program}'s orphans {orphans} outlived the boot"
            (status,) = [s for s in stack.stack.status() if s.component == program]
            if status.pid not in (0, old_master):
                own_workers_serve = bool(serving_workers(status.pid, port))
                # `status` calls it ready only once its own workers listen, never on the orphans' answers.
                assert own_workers_serve or not status.ready, status
                if not own_workers_serve and status.state == NOT_SERVING:
                    seen_orphans_answer_for_it = True
            time.sleep(0.05)
        orphans_gone_at = time.monotonic()
        time.sleep(1.0)  # a little of the new master's service alone
    # A worker that crashes while it stops leaves its requests unanswered and its listener open: the door's
    # hand-off of queued connections did (public_door.leave_port), in 6 of 20 looped runs at load 10-30.
    log = (stack.log_dir / f"{program}.log").read_text()
    crashes = [line for line in log.splitlines() if "Exception in worker process" in line]
    assert not crashes, crashes
    failed = stream.failed_attempts(since=killed_at)
    assert not stream.lost, f"requests that failed twice: {Counter(stream.lost)}; failed attempts: {failed}"
    assert len(stream.first_failures) <= 1, f"first attempts that failed: {failed}"
    # Timed on the killed service's own /healthz: creates go through the gateway, users and Redis (fsync
    # per write), and on this shared machine take 0.5-2.5 s under load with or without a kill.
    gap = stream.longest_health_gap(since=killed_at - 1.0)
    slow = stream.slow_attempts(since=killed_at)
    assert gap < LONGEST_GAP_S, f"{gap:.2f} s without an answer; slow attempts: {slow}"
    slowest = stream.slowest_health(since=killed_at - 1.0)
    assert slowest < SLOWEST_S, f"/healthz took {slowest:.2f} s; slow attempts: {slow}"
    # The new master serves on its own now; the orphans said why they stayed and why they went.
    (status,) = [s for s in stack.stack.status() if s.component == program]
    assert status.ready and status.pid != old_master, status
    assert serving_workers(status.pid, port)
    assert "master gone: serving on" in log
    assert "master gone, a new worker serves: stopping" in log
    assert "Connection in use" not in stack.stack.layout.program_output(program).read_text()
    print(
        f"{program}: {len(stream.answered_at)} answered, /healthz: longest gap {gap:.2f} s, slowest "
        f"{slowest:.2f} s, failed attempts: {failed}, "
        f"orphans gone {orphans_gone_at - killed_at:.1f} s after the kill, "
        f"status showed NOT SERVING while they answered: {seen_orphans_answer_for_it}"
    )


def test_stopping_the_stack_leaves_no_orphan_behind(tmp_path):
    """A master killed, and its successor stopped before it serves: its orphans serve on for their whole
    grace, holding the port; `stop` (make down) stops them too."""
    running = start_private_stack(tmp_path, ENV)
    try:
        programs = Programs(running.stack)
        old_master = programs.pid("users")
        orphans = eventually(
            lambda: serving_workers(old_master, running.stack.ports.users), 30, "users' workers listening"
        )
        os.kill(old_master, signal.SIGKILL)
        # The new master stopped the moment supervisord has started it, long before its workers can
        # have loaded the app: nobody takes over from the orphans. (Waiting for the orphans' log line
        # first left a quiet machine time to boot the successor, whose workers then relieved them.)
        eventually(lambda: programs.pid("users") not in (0, old_master), 10, "a successor", interval=0.01)
        programs.stop("users")
        eventually(
            lambda: "master gone: serving on" in (running.log_dir / "users.log").read_text(), 10, "orphaned"
        )
        assert all(process_exists(pid) for pid in orphans), "the orphans stopped without a successor"
    finally:
        running.http.close()
        running.stack.stop()
    assert not [pid for pid in orphans if process_exists(pid)], orphans
    assert not group_members(old_master)


def test_a_running_master_whose_workers_do_not_answer_is_not_serving(stack: RunningStack):
    """supervisord calls users' master RUNNING (it lives); its workers, stopped, hold their listeners and
    answer nothing: `status` must say NOT SERVING, then ready again once they go on."""
    master = Programs(stack.stack).pid("users")
    workers = serving_workers(master, stack.stack.ports.users)
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        (status,) = eventually(
            lambda: [s for s in stack.stack.status() if s.component == "users" and s.state == NOT_SERVING],
            15,
            "users NOT SERVING",
        )
        assert status.pid == master and not status.ready and status.problem, status
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    eventually(
        lambda: [s for s in stack.stack.status() if s.component == "users" and s.ready],
        30,
        "users ready again",
    )


def test_a_master_stopped_as_supervisord_spawns_it_stops_at_once(stack: RunningStack):
    """A stop supervisord sends while its forked child has not exec'd the master yet never reaches the
    master (services/web/early_stop.py): it booted its workers as if nothing had happened and was
    SIGKILLed stopwaitsecs (20 s) later. test_stopping_the_stack_leaves_no_orphan_behind's one failure under
    load was this: a successor stopped 14 ms after its spawn booted, and its workers relieved the orphans.
    Here the stop is sent before the child runs at all: without the check it was lost 7 times in 8."""
    programs = Programs(stack.stack)
    programs.stop("users")
    try:
        asked_at = time.monotonic()
        programs.start_and_stop_at_once("users")
        eventually(lambda: programs.info("users").state == "STOPPED", 30, "users stopped")
        took = time.monotonic() - asked_at
        # The master leaves once it has imported its configuration: 0.6-1.0 s at load 5.
        assert took < STOPWAITSECS_S / 2, f"users took {took:.1f} s to stop (SIGKILLed at {STOPWAITSECS_S} s)"
    finally:
        programs.start("users")
    eventually(
        lambda: [s for s in stack.stack.status() if s.component == "users" and s.ready], 60, "users ready"
    )
