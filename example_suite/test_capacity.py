"""Capacity gates for the demo inference API.

The demo server has 4 worker slots; classify holds one for 20 ms, embed 30 ms and infer
40 ms, so their capacities are about 200, 133 and 100 req/s. The targets sit above the
knee, so each test measures the saturated throughput and its P99 at the baseline's load.
Its LLM engine (``/v1/chat/completions``, a continuous batch of 8) is gated on goodput.
"""

from __future__ import annotations

import pytest
from tasks import Chat, Classify, Embed, Infer


# The suite's threshold is 15 % (pytest.ini says why); a marker's threshold overrides it.
@pytest.mark.capacity(target_p99_ms=120)
def test_classify_capacity(mlload):
    result = mlload.run(Classify)
    mlload.assert_no_regression(result)


@pytest.mark.capacity(target_p99_ms=180)
def test_embed_capacity(mlload):
    result = mlload.run(Embed)
    mlload.assert_no_regression(result)


@pytest.mark.capacity(target_p99_ms=240)
def test_infer_capacity(mlload):
    result = mlload.run(Infer)
    mlload.assert_no_regression(result)


@pytest.mark.capacity(target_p99_ms=200, mode="production", weights_module="production_weights")
def test_production_mix_capacity(mlload):
    """The production mix (50/30/20): capacity about 4 / 27 ms = 148 req/s."""
    result = mlload.run()
    mlload.assert_no_regression(result)
    mlload.assert_rate_limits_stable(result)


@pytest.mark.capacity(target_p99_ms=200, mode="exploration", weights_module="production_weights")
def test_mix_exploration(mlload):
    """Each endpoint's weight doubled in turn: which mix carries the most traffic?"""
    result = mlload.run()
    print(result.exploration)
    assert result.exploration["best_mix"] == "exploration 2x /v1/classify"
    mlload.assert_no_regression(result)


@pytest.mark.capacity(
    target_p99_ms=120, mode="individual spike", spike_target_rps=300, spike_duration_s=4
)
def test_classify_spike(mlload):
    """300 req/s for 4 s against a 200 req/s endpoint, then back: P99, errors, recovery."""
    result = mlload.run(Classify)
    mlload.assert_no_regression(result)


# TTFT P99 at 8 users is prefill plus the loopback HTTP time of two messages, which moves a
# few % with the machine's load: with three baseline runs the gate said a 10 % threshold is
# just undecidable ("the smallest it can decide is 10.4 %"), and on 2026-12-06 a run whose
# own TTFT window was noisier made 15 % undecidable too ("... is 17.0 %"), so this test takes
# 20 %. Record more runs (--mlload-update-baseline) to go lower.
@pytest.mark.capacity(
    ttft_p99_ms=35, tpot_p99_ms=9, slo_attainment=0.95, min_users=4, threshold=0.20
)
def test_chat_capacity(mlload):
    """Streaming chat (512-word prompts, 8 tokens): the capacity is the goodput, requests/s
    with TTFT <= 35 ms and TPOT <= 9 ms for 95 % of requests. The demo engine (a batch of 8,
    prefill 25.6 ms, decode step 4 + 0.5 x batch ms) meets both up to 8 users, about
    8 / 82 ms = 97 req/s (``testing.llm.goodput_capacity``); one user more waits for a place
    in the full batch and its TTFT passes 35 ms."""
    result = mlload.run(Chat)
    mlload.assert_no_regression(result)
