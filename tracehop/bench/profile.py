"""`make bench PROFILE=1`: where the services' CPU goes under saturation load, traced and untraced.

py-spy samples every process of gateway, users and worker (and the trace store) 100 times a second while
the bench's saturation load runs, with `--gil`: only the thread holding the interpreter lock is
sampled, so a sample is Python CPU work, not a thread waiting on a socket or on the lock. Each profile is
written as py-spy's raw collapsed stacks (`bench/profiles/<mode>-<service>.txt`, loadable by speedscope
or flamegraph.pl) and summarised by who is responsible for each sample (`attribute`), as CPU ms per
request, so traced and untraced can be subtracted.

The numbers of a profiled run are not the bench's numbers: py-spy itself takes CPU from the same two
cores. Proportions within a process are what a profile is for.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from tracehop.bench import procs
from tracehop.bench.queue import wait_for_drain
from tracehop.bench.report import BASELINE, SATURATION, STOCK, TRACEHOP

if TYPE_CHECKING:
    from tracehop.bench.runner import BenchSettings, BenchStack

SAMPLE_RATE_HZ = 100
PROFILED = ("gateway", "users", "worker", "trace-store")
TOP_CATEGORIES = 14
TOP_FUNCTIONS = 12

_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^():]+)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    function: str
    path: str

    @property
    def label(self) -> str:
        return f"{self.function} ({short_path(self.path)})"


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text.strip())
    if match is None:  # "process 123:..." or "thread (0x...)" headers, or a native frame
        return Frame(text.strip(), "")
    return Frame(match["function"], match["path"])


def parse_collapsed(text: str) -> Iterable[tuple[list[Frame], int]]:
    """py-spy raw output: one `frame;frame;...;leaf count` line per distinct stack, root first."""
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield [parse_frame(part) for part in stack.split(";")], int(count)


# Paths are classified relative to their sys.path entry ("flask/app.py", "threading.py"): py-spy is run
# with --full-filenames and the absolute path is cut after one of these.
_PATH_ROOTS = ("site-packages/", "/lib/python3.11/", "/work/main/")


def short_path(path: str) -> str:
    for marker in _PATH_ROOTS:
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _top_module(path: str) -> str:
    return short_path(path).split("/", 1)[0].removesuffix(".py")


def package_of(path: str) -> str | None:
    """A third-party package or our own code; None for the standard library and native frames."""
    relative = short_path(path)
    top = _top_module(path)
    if not top or top.startswith("<") or top in sys.stdlib_module_names:
        return None
    if top == "opentelemetry":
        if "/instrumentation/" in relative or relative.startswith("opentelemetry/util/http"):
            return "otel instrumentation"
        if "/exporter/" in relative or "/proto/" in relative:
            return "otel export"
        return "otel sdk/api"
    if top == "google":
        return "protobuf"
    if top in ("services", "tracehop"):
        return f"{top} (ours)"
    return top


def stdlib_module(path: str) -> str:
    top = _top_module(path)
    return f"stdlib {top}" if top in sys.stdlib_module_names else "native/other"


def _is_export_thread(frames: list[Frame]) -> bool:
    """Samples of the BatchSpanProcessor's worker thread: everything it does is export work."""
    return any(
        "opentelemetry/sdk/_shared_internal" in frame.path or "opentelemetry/sdk/trace/export" in frame.path
        for frame in frames
    )


def attribute(frames: list[Frame]) -> str:
    """Who is responsible for one sample: the nearest frame to the leaf that is not the standard library.

    So `json.dumps` called by loguru counts as loguru, `socket.send` called by redis-py as redis; the
    batch processor's thread counts as export whatever it calls (protobuf encoding, the HTTP POST).
    """
    if _is_export_thread(frames):
        return "otel export (batch thread)"
    stdlib = "native/other"
    for frame in reversed(frames):
        package = package_of(frame.path)
        if package is not None:
            return package
        if stdlib == "native/other":
            stdlib = stdlib_module(frame.path)  # the leaf-most standard-library module, if it comes to that
    return stdlib


@dataclass
class ProfileSummary:
    samples: int
    categories: Counter[str]
    functions: Counter[str]  # leaf frames, "self" time

    def as_dict(self, requests: int, measured_ms_per_req: float | None = None) -> dict[str, Any]:
        """Shares, and CPU ms per request per category.

        py-spy samples by the wall clock: a thread holding the GIL while the OS has descheduled its
        process is still sampled, so on a busy machine samples overstate CPU. When the CPU actually
        used (from /proc, `measured_ms_per_req`) is known, each category gets its share of that instead.
        """
        sampled = self.samples * 1000 / SAMPLE_RATE_HZ / requests if requests else None
        total = measured_ms_per_req if measured_ms_per_req is not None else sampled

        def per_request(count: int) -> float | None:
            return None if total is None or not self.samples else round(total * count / self.samples, 4)

        return {
            "samples": self.samples,
            "sampled_ms_per_req": None if sampled is None else round(sampled, 4),
            "cpu_ms_per_req": None if total is None else round(total, 4),
            "categories": [
                {
                    "category": name,
                    "share": round(count / self.samples, 4),
                    "cpu_ms_per_req": per_request(count),
                }
                for name, count in self.categories.most_common(TOP_CATEGORIES)
            ],
            "top_functions": [
                {"function": name, "share": round(count / self.samples, 4)}
                for name, count in self.functions.most_common(TOP_FUNCTIONS)
            ],
        }


def summarise_collapsed(text: str) -> ProfileSummary:
    categories: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for frames, count in parse_collapsed(text):
        python_frames = [frame for frame in frames if frame.path]
        categories[attribute(python_frames)] += count
        if python_frames:
            functions[python_frames[-1].label] += count
    return ProfileSummary(sum(categories.values()), categories, functions)


# ------------------------------------------------------------------------------------------ the run


def _py_spy() -> str:
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(binary).exists():
        raise RuntimeError("py-spy is not installed: it is in the dev extra (make install)")
    return binary


def profile_window(
    bench: BenchStack, settings: BenchSettings, out_dir: Path, console: Console
) -> dict[str, Any]:
    from tracehop.bench.runner import make_load

    services = [s for s in PROFILED if s in bench.groups and (bench.traced or s != "trace-store")]
    spies: dict[str, list[tuple[subprocess.Popen, Path]]] = {}
    for service in services:
        # One py-spy per program of the service (the worker service has two), merged below.
        for pgid in bench.groups[service]:
            output = out_dir / f"{bench.mode}-{service}-{pgid}.txt"
            command = [
                _py_spy(),
                "record",
                "--pid",
                str(pgid),
                "--subprocesses",
                "--gil",
                "--nonblocking",
                # Without it py-spy shortens paths per sys.path entry, and the opentelemetry namespace
                # package's files come out as "trace/__init__.py" or "common/...": impossible to classify.
                "--full-filenames",
                "--rate",
                str(SAMPLE_RATE_HZ),
                "--duration",
                str(round(settings.duration_s)),
                "--format",
                "raw",
                "--output",
                str(output),
            ]
            spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            spies.setdefault(service, []).append((spy, output))
    time.sleep(1.0)  # py-spy attaches to every process before the load starts
    before = procs.snapshot(bench.groups)
    load = make_load(bench, settings, SATURATION, None).start()
    console.print(f"profiling {bench.mode}: {', '.join(services)} for {settings.duration_s:g} s")
    result = load.result()
    after = procs.snapshot(bench.groups)
    measured = {
        service: round(procs.usage_between(before[service], after[service]).cpu_s * 1000 / result.ok, 4)
        for service in services
        if result.ok
    }
    summaries: dict[str, Any] = {}
    for service, service_spies in spies.items():
        raw = []
        for spy, output in service_spies:
            _, errors = spy.communicate(timeout=settings.duration_s + 60)
            if spy.returncode != 0 or not output.exists():
                raise RuntimeError(f"py-spy failed for {service}: {errors.decode(errors='replace').strip()}")
            raw.append(output.read_text())
            output.unlink()
        # One file per service, as `resummarise` reads it: collapsed stacks add up line by line.
        merged = "".join(text if text.endswith("\n") or not text else text + "\n" for text in raw)
        (out_dir / f"{bench.mode}-{service}.txt").write_text(merged)
        summaries[service] = summarise_collapsed(merged).as_dict(result.ok, measured.get(service))
    wait_for_drain(bench.redis, time.monotonic(), settings.drain_timeout_s)
    return {"load": result.as_dict(), "proc_cpu_ms_per_req": measured, "services": summaries}


def run_profile(settings: BenchSettings, console: Console) -> dict[str, Any]:
    from tracehop.bench.runner import start_bench_stack, warm_up

    assert settings.profile_dir is not None
    out_dir = settings.profile_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="tracehop-profile-"))
    benches: dict[str, BenchStack] = {}
    try:
        for mode in settings.modes:
            console.print(f"starting the {mode} stack")
            benches[mode] = start_bench_stack(mode, root)
            warm_up(benches[mode], settings)
        report = {mode: profile_window(benches[mode], settings, out_dir, console) for mode in settings.modes}
    finally:
        for bench in benches.values():
            bench.reader.close()
            bench.stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    (out_dir / "summary.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for table in profile_tables(report):
        console.print(table)
    console.print(f"raw profiles and summary.json in {out_dir}")
    return report


def resummarise(out_dir: Path, console: Console) -> dict[str, Any]:
    """Summarise raw profiles again (after changing the attribution rules), with the stored counts."""
    report = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    for mode, section in report.items():
        for service in section["services"]:
            raw = (out_dir / f"{mode}-{service}.txt").read_text()
            ok = section["load"]["created"] + section["load"]["fetched"]
            measured = section.get("proc_cpu_ms_per_req", {}).get(service)
            section["services"][service] = summarise_collapsed(raw).as_dict(ok, measured)
    (out_dir / "summary.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for table in profile_tables(report):
        console.print(table)
    return report


def profile_tables(report: dict[str, Any]) -> list[Table]:
    tables = []
    for service in PROFILED:
        traced = report.get(TRACEHOP, {}).get("services", {}).get(service)
        untraced = report.get(BASELINE, {}).get("services", {}).get(service)
        stock = report.get(STOCK, {}).get("services", {}).get(service)
        if traced is None:
            continue
        table = Table(
            title=f"{service}: CPU ms per request (from /proc) split by py-spy --gil samples",
            box=box.SIMPLE,
            title_justify="left",
        )
        for column in ("category", BASELINE, STOCK, TRACEHOP, "tracehop share"):
            table.add_column(column, justify="left" if column == "category" else "right")
        before = {c["category"]: c["cpu_ms_per_req"] for c in (untraced or {}).get("categories", [])}
        peer = {c["category"]: c["cpu_ms_per_req"] for c in (stock or {}).get("categories", [])}
        for category in traced["categories"]:
            name = category["category"]
            table.add_row(
                name,
                _ms(before.get(name)),
                _ms(peer.get(name)),
                f"{category['cpu_ms_per_req']:.3f}",
                f"{category['share']:.0%}",
            )
        table.add_row(
            "total",
            _ms(None if untraced is None else untraced["cpu_ms_per_req"]),
            _ms(None if stock is None else stock["cpu_ms_per_req"]),
            f"{traced['cpu_ms_per_req']:.3f}",
            "100%",
        )
        tables.append(table)
    return tables


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    # python -m tracehop.bench.profile bench/profiles: re-read the raw profiles a PROFILE=1 run wrote.
    resummarise(
        Path(sys.argv[1] if len(sys.argv) > 1 else "bench/profiles"), Console(highlight=False, width=120)
    )
