"""wrk's output, as our Lua script makes it print, turned into a LoadResult."""

from __future__ import annotations

import pytest

from tracehop.bench.load import UserMix
from tracehop.bench.wrk import (
    WrkError,
    load_result_from_wrk,
    lua_script,
    parse_requests_per_second,
    parse_wrk_output,
)

# Real output of Debian's wrk 4.1.0 with the generated script (numbers from a run against the gateway).
WRK_OUTPUT = """\
Running 15s test @ http://127.0.0.1:40123
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    27.10ms   14.23ms 152.31ms   71.52%
    Req/Sec   296.50     40.12   380.00     70.00%
  4461 requests in 15.02s, 1.25MB read
  Non-2xx or 3xx responses: 3
Requests/sec:    297.01
Transfer/sec:     85.12KB
TRACEHOP_BENCH {"requests":4461,"duration_us":15020000,"p50_us":25123,"p95_us":52010,"p99_us":87011,\
"max_us":152310,"created":2210,"fetched":2248,"other_status":3,"errors_connect":0,"errors_read":1,\
"errors_write":0,"errors_status":3,"errors_timeout":2}
"""


def test_result_line_is_parsed():
    numbers = parse_wrk_output(WRK_OUTPUT)
    assert numbers["requests"] == 4461
    assert numbers["p95_us"] == 52010


def test_load_result_counts_successes_and_errors_and_converts_units():
    result = load_result_from_wrk(WRK_OUTPUT, cpu_s=0.4)
    assert (result.created, result.fetched) == (2210, 2248)
    # 3 non-2xx answers (our counter) + 1 read error + 2 timeouts (wrk's socket errors); status errors are
    # the same 3 answers seen by wrk and must not be counted twice.
    assert result.errors == 6
    assert result.duration_s == pytest.approx(15.02)
    assert result.rps == pytest.approx((2210 + 2248) / 15.02)
    assert (result.p50_ms, result.p95_ms, result.p99_ms) == pytest.approx((25.123, 52.01, 87.011))
    assert result.cpu_s == 0.4 and result.generator == "wrk"


def test_wrk_own_requests_per_second_is_kept_as_a_cross_check():
    assert parse_requests_per_second(WRK_OUTPUT) == pytest.approx(297.01)
    assert load_result_from_wrk(WRK_OUTPUT, 0.0).as_dict()["wrk_requests_per_s"] == pytest.approx(297.01)


def test_output_without_the_result_line_is_an_error_that_shows_the_output():
    with pytest.raises(WrkError, match="unable to connect"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_lua_script_carries_the_mix():
    script = lua_script(UserMix(post_share=0.25, max_user_id=42))
    assert "local post_share = 0.25" in script
    assert "local max_user_id = 42" in script
    assert '"/api/users"' in script and "TRACEHOP_BENCH " in script
