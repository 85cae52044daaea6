"""Seed-style TaskSets posting KServe v2 infer requests to Seldon MLServer (bench_mlserver.py).

Each class is what a user of the seed repository writes: an ``endpoint`` and a
``test_endpoint()`` that uses ``self.client``. The load driver imports this module again in its
child process (bench/ is on its sys.path). Importing it imports Locust: the bench script sets
``LOCUST_SKIP_MONKEY_PATCH`` first.

The models are the two that bench_mlserver.py trains and serves: a logistic regression and a
30-tree random forest, both on the 4 iris features. One request carries ``ROWS`` flowers.
"""

from __future__ import annotations

from typing import Any

from locust import TaskSet

# The four iris features of a few real flowers (one per species, then repeated).
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5], [5.8, 2.7, 5.1, 1.9]]
ROWS = 4


def infer_body(rows: int = ROWS) -> dict[str, Any]:
    """A KServe v2 inference request: one FP64 input of ``rows`` x 4 features, row-major."""
    data = [x for i in range(rows) for x in FLOWERS[i % len(FLOWERS)]]
    return {"inputs": [{"name": "input-0", "shape": [rows, 4], "datatype": "FP64", "data": data}]}


BODY = infer_body()


def infer_path(model: str) -> str:
    """The KServe v2 infer route of ``model``."""
    return f"/v2/models/{model}/infer"


class _InferV2(TaskSet):
    """POST the v2 request to ``endpoint``; anything but 200 with outputs is a failure."""

    endpoint = ""

    def test_endpoint(self) -> None:
        with self.client.post(
            self.endpoint, json=BODY, name=self.endpoint, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"Failed with {response.status_code}")
            elif b'"outputs"' not in (response.content or b""):
                # MLServer answers 200 only with a result, but a proxy or a wrong route might
                # not: a body without outputs is not an inference.
                response.failure("200 without outputs")
            else:
                response.success()


class IrisLogreg(_InferV2):
    """POST /v2/models/iris-logreg/infer (LogisticRegression: light, HTTP/codec bound)."""

    endpoint = infer_path("iris-logreg")


class IrisForest(_InferV2):
    """POST /v2/models/iris-forest/infer (RandomForest, 30 trees: CPU bound in the workers)."""

    endpoint = infer_path("iris-forest")
