"""Seed-style TaskSets (ml-loadtest shape: ``endpoint`` + ``test_endpoint()``) for the benchmarks.

The load driver imports this module again in its child process (bench/ is on its sys.path).
Importing it imports Locust: the bench scripts set ``LOCUST_SKIP_MONKEY_PATCH`` first.
"""

from __future__ import annotations

from _common import PAYLOADS
from locust import FastHttpUser, TaskSet, task


class _SeedPost(TaskSet):
    """POST the endpoint's JSON payload; anything but 200 is a failure."""

    endpoint = ""

    def test_endpoint(self) -> None:
        with self.client.post(
            self.endpoint, json=PAYLOADS[self.endpoint], name=self.endpoint, catch_response=True
        ) as response:
            if response.status_code == 200:
                response.success()
            else:
                response.failure(f"Failed with {response.status_code}")


class Classify(_SeedPost):
    """POST /v1/classify."""

    endpoint = "/v1/classify"


class Embed(_SeedPost):
    """POST /v1/embed."""

    endpoint = "/v1/embed"


class Work(_SeedPost):
    """POST /work (service time ``service_ms``)."""

    endpoint = "/work"


class Infer(_SeedPost):
    """POST a KServe-v2 request to /v2/models/resnet/infer (service time ``infer_ms``)."""

    endpoint = "/v2/models/resnet/infer"


class _SeedGet(TaskSet):
    """GET the endpoint; anything but 200 is a failure."""

    endpoint = ""

    def test_endpoint(self) -> None:
        with self.client.get(self.endpoint, name=self.endpoint, catch_response=True) as response:
            if response.status_code == 200:
                response.success()
            else:
                response.failure(f"Failed with {response.status_code}")


class Fast(_SeedGet):
    """GET /fast: the trivial endpoint, in seed style (catch_response, name)."""

    endpoint = "/fast"


class GetWork(_SeedGet):
    """GET /work: one slot for ``service_ms x slowdown`` (bench_verdicts.py --real)."""

    endpoint = "/work"


class FastUser(FastHttpUser):
    """A plain Locust user hitting /fast: what raw Locust runs, here as a run_capacity target."""

    @task
    def fast(self) -> None:
        self.client.get("/fast")
