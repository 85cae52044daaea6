"""The Locust ``User`` classes behind :func:`pytest_mlload.targets.openai_chat` and friends.

Locust is imported inside the builders, when a factory is called, never when this module
is. Each built class carries its *recipe* (``__mlload_recipe__``: the factory's name and
keyword arguments), so the load driver, a child process, rebuilds the same class from the
recipe instead of importing it by name (it is defined inside a function).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Mapping
from typing import Any

from pytest_mlload.load.streaming import record_stream

__all__ = ["RECIPE_ATTR", "build_kserve_user", "build_openai_user", "synthetic_prompt"]

RECIPE_ATTR = "__mlload_recipe__"


def synthetic_prompt(words: int, rng: random.Random | None = None) -> str:
    """A prompt of ``words`` whitespace-separated words, the first one random.

    The random first word defeats prefix caching, which would make TTFT look better than
    users see. A word is about 1.3 tokens to a real tokenizer (one to the demo server):
    the server's ``usage.prompt_tokens`` says what it counted.
    """
    rng = rng or random.Random()
    head = [f"{rng.getrandbits(32):08x}"] if words else []
    return " ".join(head + [f"w{i % 97}" for i in range(1, words)])


def _headers(api_key_env: str | None) -> dict[str, str]:
    """Request headers; the API key is read from the environment, never stored."""
    headers = {"Accept-Encoding": "identity"}  # SSE must arrive as sent, not gzipped
    if api_key_env:
        key = os.environ.get(api_key_env)
        if key:
            headers["Authorization"] = "Bearer " + key
    return headers


def _drain(response: Any) -> None:
    """Read and drop a response we do not report, so its connection can be reused."""
    with contextlib.suppress(Exception):  # a broken connection: the pool replaces it
        _ = response.content


def build_openai_user(recipe: Mapping[str, Any], *, chat: bool) -> type:
    """A FastHttpUser streaming OpenAI chat (``chat=True``) or completions requests.

    ``recipe["kwargs"]`` holds the factory's arguments (see
    :func:`pytest_mlload.targets.openai_chat`).
    """
    from locust import FastHttpUser, constant, task

    kw = dict(recipe["kwargs"])
    path = kw["path"] or ("/v1/chat/completions" if chat else "/v1/completions")
    label = kw["name"] or path
    base: dict[str, Any] = {"model": kw["model"], "max_tokens": kw["max_tokens"], "stream": True}
    base.update(kw["extra_body"] or {})
    include_usage = bool(kw["include_usage"])

    class OpenAIUser(FastHttpUser):
        wait_time = constant(0)
        network_timeout = float(kw["timeout_s"])
        connection_timeout = float(kw["timeout_s"])
        # Set once a server answered 400 to stream_options and took the request without it.
        usage_refused = False

        def on_start(self) -> None:
            self._headers = _headers(kw["api_key_env"])
            self._rng = random.Random()

        def _send(self, usage: bool) -> tuple[float, Any]:
            prompt = synthetic_prompt(int(kw["prompt_tokens"]), self._rng)
            body = dict(base)
            if chat:
                body["messages"] = [{"role": "user", "content": prompt}]
            else:
                body["prompt"] = prompt
            if usage:
                body["stream_options"] = {"include_usage": True}
            sent = time.perf_counter()
            response = self.client.post(
                path, json=body, name=label, headers=self._headers, stream=True,
                catch_response=True,
            )  # fmt: skip
            return sent, response

        @task
        def generate(self) -> None:
            usage = include_usage and not type(self).usage_refused
            sent, response = self._send(usage)
            if usage and response.status_code == 400:
                # Some servers refuse stream_options: retry without it (the refused attempt
                # is not reported) and count chunks from then on if that works.
                _drain(response)
                sent, response = self._send(False)
                if response.status_code != 400:
                    type(self).usage_refused = True
            with response:
                record_stream(response, sent_s=sent)

        def on_stop(self) -> None:
            self.client.client.clientpool.close()

    return _named(OpenAIUser, "OpenAIChat" if chat else "OpenAICompletions", recipe)


def build_kserve_user(recipe: Mapping[str, Any]) -> type:
    """A FastHttpUser posting KServe v2 tensors (:func:`pytest_mlload.targets.kserve_v2_infer`)."""
    from locust import FastHttpUser, constant, task

    kw = dict(recipe["kwargs"])
    path = kw["path"] or f"/v2/models/{kw['model']}/infer"
    label = kw["name"] or path
    shape = [int(n) for n in kw["shape"]]
    count = 1
    for n in shape:
        count *= n
    tensor = {"name": kw["input_name"], "shape": shape, "datatype": kw["datatype"]}

    class KServeUser(FastHttpUser):
        wait_time = constant(0)
        network_timeout = float(kw["timeout_s"])
        connection_timeout = float(kw["timeout_s"])

        def on_start(self) -> None:
            self._headers = _headers(kw["api_key_env"])
            rng = random.Random()
            self._body = {"inputs": [{**tensor, "data": [rng.random() for _ in range(count)]}]}

        @task
        def infer(self) -> None:
            with self.client.post(
                path, json=self._body, name=label, headers=self._headers, catch_response=True
            ) as response:
                if response.status_code != 200:
                    response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                elif b'"outputs"' not in (response.content or b""):
                    response.failure("200 without outputs: not a KServe v2 inference response")
                else:
                    response.success()

        def on_stop(self) -> None:
            self.client.client.clientpool.close()

    return _named(KServeUser, "KServeV2Infer", recipe)


def _named(cls: type, name: str, recipe: Mapping[str, Any]) -> type:
    cls.__name__ = cls.__qualname__ = name
    setattr(cls, RECIPE_ATTR, dict(recipe))
    return cls
