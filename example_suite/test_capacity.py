"""Capacity gates for the demo inference API.

The demo server has 4 worker slots; classify holds one for 20 ms, embed 30 ms and infer
40 ms, so their capacities are about 200, 133 and 100 req/s. The targets sit above the
knee, so each test measures the saturated throughput and its P99 at the baseline's load.
"""

from __future__ import annotations

import pytest
from tasks import Classify, Embed, Infer


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
