"""Targets for the hardening tests: user code that raises, and Users whose tasks are TaskSets."""

from __future__ import annotations

from locust import FastHttpUser, TaskSet, task

BODY = {"inputs": [[0.5] * 16]}


class Broken(TaskSet):
    """A seed TaskSet whose test_endpoint raises before it sends anything."""

    endpoint = "/v1/classify"

    def test_endpoint(self) -> None:
        payload: dict[str, object] = {}
        self.client.post(self.endpoint, json=payload["inputs"], name=self.endpoint)  # raises


class InnerSet(TaskSet):
    """The TaskSet that sends: POST /v1/classify."""

    @task
    def classify(self) -> None:
        self.client.post("/v1/classify", json=BODY, name="/v1/classify")


class OuterSet(TaskSet):
    """A TaskSet whose only task is another TaskSet (two levels of nesting)."""

    tasks = [InnerSet]


class NestedUser(FastHttpUser):
    """A plain Locust User whose tasks are TaskSets, not functions."""

    tasks = [OuterSet]

    def on_stop(self) -> None:
        self.client.client.clientpool.close()


class FastUser(FastHttpUser):
    """GET /fast (no slot, no service time): for many users on a cheap server."""

    @task
    def fast(self) -> None:
        self.client.get("/fast", name="/fast")

    def on_stop(self) -> None:
        self.client.client.clientpool.close()
