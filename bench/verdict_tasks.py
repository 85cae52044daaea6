"""The seed-style TaskSet the verdict bench loads the demo server with (``GET /work``).

The load driver imports this module again in its child process (bench/ is on its sys.path).
Importing it imports Locust: bench_verdicts.py sets ``LOCUST_SKIP_MONKEY_PATCH`` first.
"""

from __future__ import annotations

from locust import TaskSet


class Work(TaskSet):
    """``GET /work``: one slot for ``service_ms x slowdown``; anything but 200 is a failure."""

    endpoint = "/work"

    def test_endpoint(self) -> None:
        with self.client.get(self.endpoint, name=self.endpoint, catch_response=True) as response:
            if response.status_code == 200:
                response.success()
            else:
                response.failure(f"Failed with {response.status_code}")
