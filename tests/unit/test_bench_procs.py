"""/proc parsing and per-component usage: the numbers behind cpu_s and rss_mb."""

from __future__ import annotations

import os

import pytest

from services.metrics.proc_stat import CLOCK_TICKS, PAGE_BYTES, parse_pss_bytes, parse_stat
from tracehop.bench.procs import ProcessSample, parse_proc_stat, read_process, snapshot, usage_between


def test_stat_line_with_spaces_and_parentheses_in_the_name():
    fields = ["S", "1", "4242", "4242", "0", "-1", "4194560", "100", "0", "0", "0"]
    fields += [str(3 * CLOCK_TICKS), str(CLOCK_TICKS)]  # utime, stime
    fields += ["0"] * 8 + ["256"]  # ... up to rss (pages)
    text = "123 (gunicorn: worker (x)) " + " ".join(fields)
    stat = parse_stat(123, text)
    assert (stat.state, stat.ppid, stat.pgid) == ("S", 1, 4242)
    assert stat.cpu_seconds == pytest.approx(4.0)
    assert stat.resident_bytes == 256 * PAGE_BYTES


def test_pss_from_smaps_rollup():
    assert parse_pss_bytes("Rss:  2048 kB\nPss:  1024 kB\nShared_Clean: 0 kB\n") == 1024 * 1024
    assert parse_pss_bytes("Rss: 1 kB\n") is None


def test_machine_busy_time_excludes_idle_iowait_and_steal():
    busy = parse_proc_stat(f"cpu  {CLOCK_TICKS} 0 {CLOCK_TICKS} 999 999 0 0 {CLOCK_TICKS} 0 0\ncpu0 ...\n")
    assert busy.busy_s == pytest.approx(2.0)
    assert busy.steal_s == pytest.approx(1.0)


def test_usage_sums_processes_and_counts_a_new_one_from_zero():
    before = {1: ProcessSample(1, 1, 10.0, 30.0, None), 2: ProcessSample(2, 1, 5.0, 60.0, None)}
    after = {
        1: ProcessSample(1, 1, 10.5, 30.0, 20.0),
        2: ProcessSample(2, 1, 6.0, 70.0, 40.0),
        3: ProcessSample(3, 1, 0.25, 50.0, 30.0),  # forked during the window
    }
    usage = usage_between(before, after)
    assert usage.cpu_s == pytest.approx(1.75)
    assert usage.rss_mb == pytest.approx(150.0)
    assert usage.pss_mb == pytest.approx(90.0)
    assert usage.processes == 3
    assert usage.rss_mb_max_process == pytest.approx(70.0)


def test_snapshot_finds_this_process_by_its_group():
    me = read_process(os.getpid(), with_pss=True)
    assert me is not None and me.rss_mb > 1 and me.cpu_s > 0
    found = snapshot({"pytest": (os.getpgid(0),)}, with_pss=True)
    assert os.getpid() in found["pytest"]
