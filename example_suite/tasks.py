"""Seed-style TaskSets, exactly as ml-loadtest expects them: an ``endpoint`` attribute and a
``test_endpoint()`` method that sends the request through ``self.client``.

These are reused unchanged by pytest-mlload: pass one to ``mlload.run`` for a single
endpoint, or the ``production_weights`` mapping for the production mix.
"""

from __future__ import annotations

from locust import TaskSet

from pytest_mlload.targets import openai_chat

# A streaming OpenAI chat target (a Locust User class) for the demo's LLM engine.
Chat = openai_chat(model="demo", prompt_tokens=512, max_tokens=8)

IMAGE = [[0.1 * i for i in range(16)] for _ in range(2)]


class _JsonPost(TaskSet):
    endpoint = ""
    payload: dict = {}

    def test_endpoint(self) -> None:
        with self.client.post(
            self.endpoint, json=self.payload, name=self.endpoint, catch_response=True
        ) as response:
            if response.status_code == 200:
                response.success()
            else:
                response.failure(f"Failed with {response.status_code}")


class Classify(_JsonPost):
    endpoint = "/v1/classify"
    payload = {"inputs": IMAGE}


class Embed(_JsonPost):
    endpoint = "/v1/embed"
    payload = {"inputs": ["a photo of a cat", "a photo of a dog"]}


class Infer(_JsonPost):
    """A KServe-v2 inference request."""

    endpoint = "/v2/models/resnet/infer"
    payload = {
        "inputs": [{"name": "input__0", "shape": [1, 16], "datatype": "FP32", "data": IMAGE[0]}]
    }
