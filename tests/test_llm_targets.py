"""Target factories: what mlload.run accepts, and the recipe the load driver rebuilds."""

from __future__ import annotations

import json
import random

import pytest

from pytest_mlload.errors import ConfigError
from pytest_mlload.load.factories import synthetic_prompt
from pytest_mlload.targets import (
    import_class,
    is_locust_user,
    kserve_v2_infer,
    openai_chat,
    openai_completions,
    resolve_target,
)


def test_openai_chat_is_a_locust_user_that_travels_as_its_recipe():
    chat = openai_chat(model="m", prompt_tokens=64, max_tokens=16, extra_body={"ignore_eos": True})
    assert is_locust_user(chat) and chat.__qualname__ == "OpenAIChat"
    spec = resolve_target(chat)  # defined in a function, yet accepted
    assert spec.kind == "user" and spec.label == "OpenAIChat"
    ref = json.loads(json.dumps(spec.to_dict()))["user"]  # as the driver receives it
    assert ref["recipe"]["factory"] == "openai_chat"
    assert ref["recipe"]["kwargs"]["extra_body"] == {"ignore_eos": True}
    again = import_class(ref)
    assert is_locust_user(again) and again is not chat
    assert again.__mlload_recipe__ == chat.__mlload_recipe__


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        (openai_chat, {"model": ""}, "model must be the served model name"),
        (openai_chat, {"model": "m", "max_tokens": 0}, "max_tokens must be an integer >= 1"),
        (openai_completions, {"model": "m", "prompt_tokens": 1.5}, "prompt_tokens must be"),
        (openai_chat, {"model": "m", "extra_body": [1]}, "extra_body must be a mapping"),
        (openai_chat, {"model": "m", "timeout_s": 0}, "timeout_s must be > 0"),
        (kserve_v2_infer, {"model": "m", "shape": (1, 0)}, "each dimension of shape"),
        (kserve_v2_infer, {"model": "m", "shape": ()}, "at least one dimension"),
    ],
)
def test_bad_arguments_name_the_argument(factory, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        factory(**kwargs)


def test_kserve_recipe_keeps_only_the_arguments():
    cls = kserve_v2_infer(model="resnet", shape=[2, 3])
    kwargs = cls.__mlload_recipe__["kwargs"]
    assert kwargs["shape"] == [2, 3] and kwargs["model"] == "resnet"
    assert set(kwargs) == {
        "model", "shape", "datatype", "input_name", "path", "name", "api_key_env", "timeout_s"
    }  # fmt: skip


def test_unknown_recipe_factory_is_refused():
    with pytest.raises(ConfigError, match="unknown target factory 'evil'"):
        import_class({"module": "x", "qualname": "y", "recipe": {"factory": "evil", "kwargs": {}}})


def test_synthetic_prompt_has_the_word_count_and_a_random_head():
    a, b = synthetic_prompt(256, random.Random(1)), synthetic_prompt(256, random.Random(2))
    assert len(a.split()) == len(b.split()) == 256
    assert a.split()[0] != b.split()[0] and a.split()[1:] == b.split()[1:]
    assert synthetic_prompt(0) == ""
