"""Targets for the engine tests: a seed-style TaskSet and a plain Locust User."""

from __future__ import annotations

from locust import FastHttpUser, TaskSet, task


class Classify(TaskSet):
    endpoint = "/v1/classify"

    def test_endpoint(self) -> None:
        with self.client.post(
            self.endpoint, json={"inputs": [[0.5] * 16]}, name=self.endpoint, catch_response=True
        ) as response:
            if response.status_code == 200:
                response.success()
            else:
                response.failure(f"Failed with {response.status_code}")


class WorkUser(FastHttpUser):
    """A plain Locust User class (not a seed TaskSet) hitting /work."""

    @task
    def work(self) -> None:
        self.client.get("/work", name="/work")

    def on_stop(self) -> None:
        self.client.client.clientpool.close()
