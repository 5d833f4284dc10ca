"""Tail probe: records what can hold up a request in each Python process of a stack, and every request.

Loaded by Python itself at start-up when this directory is first on PYTHONPATH (the `sitecustomize`
hook), and only then: `python -m tracehop.bench.tail` puts it there for the stacks it starts, nothing
else does. It does nothing unless TRACEHOP_TAIL_PROBE_DIR names a directory. TRACEHOP_TAIL_STORE_NICE=<n>
puts the trace store's process n nice levels lower (a diagnostic of the tail tool, nothing else's).

Why a start-up hook and not code in the services: the collections to count begin at import, long before
any service code runs, and the probe must not change what it measures (no import of the services, of
Flask or of OpenTelemetry here; each wrapper is put in place once some collection finds its module
already imported).

One file per process, `<pid>.events`, lines of space-separated fields (times in ns; `runq` is the time
the thread was runnable but waited for a CPU, from /proc/<pid>/task/<tid>/schedstat: the kernel's own
account of CPU contention, which the interpreter lock does not enter):
  P <pid> <ppid> <service or -> <argv0…>                     once, when the process writes its first line
  G <start wall> <wall> <thread cpu> <generation> <collected>         a garbage collection
  E <start wall> <wall> <thread cpu> <spans> <longest stretch>        a span export (the exporter's call)
  R <start wall> <wall> <thread cpu> <runq> <method> <path?query>     a request through Flask.__call__
                                                    (or the trace store's query API)
  S <start wall> <wall> <thread cpu> <runq> <body bytes>              the trace store ingesting one POST
The longest stretch is the most thread CPU the encoder ran without a pause (tracehop's exporter pauses
every 32 spans to let requests run), from the encoding's start to its end, the POST left out. In a gevent
worker (the gateway) one thread runs every request of the process: an export's or a request's thread CPU
and runq then also count the other requests its greenlets served meanwhile.
"""

import contextlib
import gc
import os
import sys
import time
from _thread import get_native_id  # the OS thread's id: gevent patches threading's idents, not this

_DIR = os.environ.get("TRACEHOP_TAIL_PROBE_DIR")
_EXPORTER_MODULE = "services.telemetry.otlp_json_exporter"
_FLASK_MODULE = "flask.app"
_STORE_MODULE = "tracehop.traces.store.server"
_QUERY_MODULE = "tracehop.traces.store.query_app"  # the store's query API (the bench's freshness poller)


class _Probe:
    def __init__(self, directory):
        self.directory = directory
        self.pid = None
        self.file = None
        self.started = (0, 0)
        self.schedstat_fds = {}  # OS thread id -> open /proc/…/schedstat of that thread
        # module name -> the wrapper to put in place once the module has been imported
        self.pending = {
            _EXPORTER_MODULE: self._wrap_exporter,
            _FLASK_MODULE: lambda module: self._wrap_wsgi(module.Flask),
            _STORE_MODULE: self._wrap_store,
            _QUERY_MODULE: lambda module: self._wrap_wsgi(module.QueryPort),
        }

    def _out(self):
        pid = os.getpid()
        if pid != self.pid:  # first line, or the first in a forked child
            self.pid = pid
            self.schedstat_fds = {}  # the parent's threads are not this process's
            # Open for the process's life; line-buffered, so a worker killed outright loses nothing.
            self.file = open(os.path.join(self.directory, f"{pid}.events"), "a", buffering=1)  # noqa: SIM115
            service = os.environ.get("OTEL_SERVICE_NAME") or "-"
            self.file.write(f"P {pid} {os.getppid()} {service} {' '.join(sys.argv[:3])}\n")
        return self.file

    def runq_ns(self):
        """This thread's time waiting on a run queue so far (schedstat's second field)."""
        tid = get_native_id()
        fd = self.schedstat_fds.get(tid)
        if fd is None or self.pid != os.getpid():
            self._out()
            fd = self.schedstat_fds[tid] = os.open(f"/proc/{os.getpid()}/task/{tid}/schedstat", os.O_RDONLY)
        return int(os.pread(fd, 64, 0).split()[1])

    def on_gc(self, phase, info):
        if phase == "start":
            self.started = (time.time_ns(), time.thread_time_ns())
            return
        wall0, cpu0 = self.started
        wall, cpu = time.time_ns() - wall0, time.thread_time_ns() - cpu0
        with contextlib.suppress(OSError, ValueError):
            self._out().write(f"G {wall0} {wall} {cpu} {info['generation']} {info['collected']}\n")
        for name in [name for name in self.pending if name in sys.modules]:
            module = sys.modules[name]
            # Only once its import has finished: a collection can run while the module is half executed.
            if not getattr(module.__spec__, "_initializing", False):
                self.pending.pop(name)(module)

    def _timed(self, kind, run, describe):
        """Runs `run()` and writes one `kind` line with its wall, thread CPU and runq wait."""
        wall0, cpu0, runq0 = time.time_ns(), time.thread_time_ns(), self.runq_ns()
        try:
            return run()
        finally:
            wall, cpu = time.time_ns() - wall0, time.thread_time_ns() - cpu0
            runq = self.runq_ns() - runq0
            with contextlib.suppress(OSError, ValueError):
                self._out().write(f"{kind} {wall0} {wall} {cpu} {runq} {describe()}\n")

    def _wrap_wsgi(self, cls):
        probe = self
        call = cls.__call__

        def timed_call(app, environ, start_response):
            def describe():
                query = environ.get("QUERY_STRING")
                path = environ.get("PATH_INFO", "") + (f"?{query}" if query else "")
                return f"{environ.get('REQUEST_METHOD', '-')} {path.replace(' ', '%20') or '-'}"

            return probe._timed("R", lambda: call(app, environ, start_response), describe)

        cls.__call__ = timed_call

    def _wrap_store(self, module):
        # A diagnostic: the store at a lower CPU priority than the services (the store stands in for a
        # backend that would run on another machine), to measure what its bursts cost the requests.
        os.nice(int(os.environ.get("TRACEHOP_TAIL_STORE_NICE") or 0))
        probe = self
        export = module.OtlpHandler._export

        def timed_export(handler, body, content_type):
            return probe._timed("S", lambda: export(handler, body, content_type), lambda: len(body))

        module.OtlpHandler._export = timed_export

    def _wrap_exporter(self, module):
        probe = self
        stretch = {"last": 0, "longest": 0}
        pause = module.let_requests_run

        def timed_pause():
            # The encoder's pauses split its hold of the interpreter: the CPU between two is one stretch.
            now = time.thread_time_ns()
            stretch["longest"] = max(stretch["longest"], now - stretch["last"])
            pause()
            stretch["last"] = time.thread_time_ns()

        module.let_requests_run = timed_pause
        encode = module.encode_spans_json

        def timed_encode(*args, **kwargs):
            try:
                return encode(*args, **kwargs)
            finally:  # the encoding's last stretch: from its last pause (or its start) to its end
                stretch["longest"] = max(stretch["longest"], time.thread_time_ns() - stretch["last"])

        module.encode_spans_json = timed_encode
        export = module.OTLPJsonSpanExporter.export

        def timed_export(self, spans):
            wall0, cpu0 = time.time_ns(), time.thread_time_ns()
            stretch["last"], stretch["longest"] = cpu0, 0
            try:
                return export(self, spans)
            finally:
                wall, cpu = time.time_ns() - wall0, time.thread_time_ns() - cpu0
                # The encoding's stretches only: the POST after it waits for the network, and meanwhile a
                # gevent worker runs its requests on this same thread.
                longest = stretch["longest"]
                probe._out().write(f"E {wall0} {wall} {cpu} {len(spans)} {longest}\n")

        module.OTLPJsonSpanExporter.export = timed_export


if _DIR:
    gc.callbacks.append(_Probe(_DIR).on_gc)
