"""The bench's arithmetic: percentiles, medians with ranges, CPU-probe normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracehop.bench.stats import (
    latency_percentiles_ms,
    normalise_rps,
    paired_ratios,
    percentile,
    pooled_percentile,
    ratio,
    slowest,
    spread,
)


def test_percentile_interpolates_between_closest_ranks_like_numpy():
    values = [10, 20, 30, 40]
    assert percentile(values, 0) == 10
    assert percentile(values, 100) == 40
    assert percentile(values, 50) == 25  # numpy.percentile([10, 20, 30, 40], 50)
    assert percentile(values, 95) == pytest.approx(38.5)  # numpy: 38.5


def test_percentile_does_not_depend_on_input_order_and_handles_one_value():
    assert percentile([40, 10, 30, 20], 50) == 25
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_is_none_and_bad_q_is_refused():
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_percentiles_are_reported_in_milliseconds():
    latencies = [0.001 * n for n in range(1, 101)]  # 1..100 ms
    result = latency_percentiles_ms(latencies)
    assert result["p50_ms"] == pytest.approx(50.5)
    assert result["p99_ms"] == pytest.approx(99.01)
    assert result["max_ms"] == pytest.approx(100.0)
    assert latency_percentiles_ms([])["p95_ms"] is None


def test_spread_gives_median_and_range_ignoring_missing_values():
    summary = spread([300.0, None, 200.0, 400.0])
    assert (summary.median, summary.low, summary.high, summary.n) == (300.0, 200.0, 400.0, 3)
    assert spread([None, None]) is None


def test_a_slower_machine_scales_throughput_up():
    # The probe took 20% longer than usual: the machine was 20% slower, so 100 req/s counts as 120.
    assert normalise_rps(100.0, probe_ms=6.0, reference_ms=5.0) == pytest.approx(120.0)
    assert normalise_rps(100.0, probe_ms=4.0, reference_ms=5.0) == pytest.approx(80.0)


def test_without_a_probe_reading_throughput_stays_raw():
    assert normalise_rps(100.0, probe_ms=None, reference_ms=5.0) == 100.0
    assert normalise_rps(100.0, probe_ms=5.0, reference_ms=None) == 100.0


def test_ratio_and_paired_ratios():
    assert ratio(85.0, 100.0) == pytest.approx(0.85)
    assert ratio(None, 100.0) is None
    assert ratio(1.0, 0.0) is None
    assert paired_ratios([90.0, 80.0], [100.0, 100.0]) == pytest.approx([0.9, 0.8])


@settings(max_examples=300, deadline=None)
@given(
    windows=st.lists(
        st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=400),
        min_size=1,
        max_size=6,
    ),
    q=st.sampled_from([50.0, 90.0, 99.0, 99.9]),
)
def test_pooled_percentile_from_kept_tails_is_the_percentile_of_all_values_or_none(windows, q):
    kept = [(len(values), slowest(values)) for values in windows]
    pooled = pooled_percentile(kept, q)
    everything = [value for values in windows for value in values]
    if pooled is not None:  # when it answers, it is exact
        assert pooled == pytest.approx(percentile(everything, q), rel=1e-9, abs=1e-9)
    # Every value kept: always an answer.
    assert pooled_percentile([(len(v), sorted(v, reverse=True)) for v in windows], q) == pytest.approx(
        percentile(everything, q), rel=1e-9, abs=1e-9
    )


def test_pooled_p99_of_five_windows_of_1500_is_the_75th_slowest_and_needs_only_tails():
    windows = [[float(i * 5 + w) for i in range(1500)] for w in range(5)]
    kept = [(1500, slowest(values)) for values in windows]
    assert all(len(values) == 150 for _, values in kept)
    assert pooled_percentile(kept, 99) == pytest.approx(percentile([v for w in windows for v in w], 99))
    # One window holding every slow request: its tenth is not enough to place the pooled p99.
    lopsided = [[1.0] * 1500 for _ in range(19)] + [[float(i) for i in range(1500)]]
    assert pooled_percentile([(1500, slowest(v)) for v in lopsided], 50) is None
