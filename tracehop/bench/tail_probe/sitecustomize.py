"""Tail probe: records every garbage collection and every span export of each Python process of a stack.

Loaded by Python itself at start-up when this directory is first on PYTHONPATH (the `sitecustomize`
hook), and only then: `python -m tracehop.bench.tail` puts it there for the stacks it starts, nothing
else does. It does nothing unless TRACEHOP_TAIL_PROBE_DIR names a directory.

Why a start-up hook and not code in the services: the collections to count begin at import, long before
any service code runs, and the probe must not change what it measures (no import of the services or of
OpenTelemetry here; the exporter is wrapped once some collection finds its module already imported).

One file per process, `<pid>.events`, lines of space-separated fields:
  P <pid> <ppid> <service or -> <argv0…>          once, when the process writes its first line
  G <start wall ns> <wall ns> <thread cpu ns> <generation> <collected>     a collection
  E <start wall ns> <wall ns> <thread cpu ns> <spans> <longest stretch ns>  an export (the exporter's call)
The longest stretch is the most thread CPU the encoder ran without a pause (tracehop's exporter pauses
every 32 spans to let requests run), from the encoding's start to its end, the POST left out. In a gevent
worker the export's thread CPU also counts the requests its greenlets served while the POST waited for
the network: there only the stretch is the export's own.
"""

import contextlib
import gc
import os
import sys
import time

_DIR = os.environ.get("TRACEHOP_TAIL_PROBE_DIR")
_EXPORTER_MODULE = "services.telemetry.otlp_json_exporter"


class _Probe:
    def __init__(self, directory):
        self.directory = directory
        self.pid = None
        self.file = None
        self.started = (0, 0)
        self.patched = False

    def _out(self):
        pid = os.getpid()
        if pid != self.pid:  # first line, or the first in a forked child
            self.pid = pid
            # Open for the process's life; line-buffered, so a worker killed outright loses nothing.
            self.file = open(os.path.join(self.directory, f"{pid}.events"), "a", buffering=1)  # noqa: SIM115
            service = os.environ.get("OTEL_SERVICE_NAME") or "-"
            self.file.write(f"P {pid} {os.getppid()} {service} {' '.join(sys.argv[:3])}\n")
        return self.file

    def on_gc(self, phase, info):
        if phase == "start":
            self.started = (time.time_ns(), time.thread_time_ns())
            return
        wall0, cpu0 = self.started
        wall, cpu = time.time_ns() - wall0, time.thread_time_ns() - cpu0
        with contextlib.suppress(OSError, ValueError):
            self._out().write(f"G {wall0} {wall} {cpu} {info['generation']} {info['collected']}\n")
        module = None if self.patched else sys.modules.get(_EXPORTER_MODULE)
        # Only once its import has finished: a collection can run while the module is half executed.
        if module is not None and not getattr(module.__spec__, "_initializing", False):
            self.patched = True
            self._wrap_exporter(module)

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
