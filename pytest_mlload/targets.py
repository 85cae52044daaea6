"""What ``mlload.run(target)`` accepts, checked without importing Locust.

A target is one of:

* a seed-style TaskSet (as in ml-loadtest): a class with a string ``endpoint`` attribute and a
  ``test_endpoint()`` method, which sends its request(s) through ``self.client``;
* a plain Locust ``User`` class (``HttpUser``, ``FastHttpUser`` or your own);
* a weights mapping ``{TaskSet: weight}`` (the ml-loadtest ``production_weights`` contract), a
  module holding ``production_weights``, or that module's dotted name;
* a class made by a factory here: :func:`openai_chat`, :func:`openai_completions` (streaming
  LLM endpoints, timed per token) or :func:`kserve_v2_infer` (tensors).

The load itself runs in a child process, so a target travels as a :class:`TargetSpec`: the
module and qualified name of each class, which the child imports again; a factory-made class
travels as its recipe (factory name and arguments), which the child calls again.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_mlload.errors import ConfigError

__all__ = [
    "ClassRef",
    "TargetSpec",
    "is_locust_user",
    "is_seed_taskset",
    "kserve_v2_infer",
    "openai_chat",
    "openai_completions",
    "resolve_target",
]

RECIPE_ATTR = "__mlload_recipe__"  # same name as pytest_mlload.load.factories.RECIPE_ATTR


@dataclass(frozen=True, slots=True)
class ClassRef:
    """Where a class lives, so another process can import it."""

    module: str
    qualname: str
    file: str | None
    recipe: dict[str, Any] | None = None
    """For a factory-made class: ``{"factory": name, "kwargs": {...}}`` to build it again."""

    @classmethod
    def of(cls, obj: type) -> ClassRef:
        """Reference to ``obj``; refuses classes another process cannot import."""
        recipe = vars(obj).get(RECIPE_ATTR)
        if recipe is not None:
            return cls(obj.__module__, obj.__qualname__, None, dict(recipe))
        if "<locals>" in obj.__qualname__:
            raise ConfigError(
                f"target {obj.__qualname__} is defined inside a function; the load runs in a "
                f"child process that imports it again, so define it at module level"
            )
        try:
            file = inspect.getfile(obj)
        except (TypeError, OSError):
            file = None
        return cls(obj.__module__, obj.__qualname__, file)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        out: dict[str, Any] = {"module": self.module, "qualname": self.qualname, "file": self.file}
        if self.recipe is not None:
            out["recipe"] = self.recipe
        return out


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A resolved target: either one Locust ``User`` class, or weighted seed TaskSets."""

    kind: str  # "user" or "tasksets"
    user: ClassRef | None
    tasksets: tuple[tuple[ClassRef, float, str], ...]  # (class, weight, endpoint)
    label: str

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Endpoint names of the TaskSets (empty for a User class)."""
        return tuple(ep for _, _, ep in self.tasksets)

    @property
    def mix(self) -> dict[str, float]:
        """Endpoint -> weight of a mix of several TaskSets (empty for one target)."""
        return {ep: w for _, w, ep in self.tasksets} if len(self.tasksets) > 1 else {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, sent to the load driver."""
        return {
            "kind": self.kind,
            "user": self.user.to_dict() if self.user else None,
            "tasksets": [
                {"ref": ref.to_dict(), "weight": w, "endpoint": ep} for ref, w, ep in self.tasksets
            ],
            "label": self.label,
        }


def _mro_names(obj: type) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in inspect.getmro(obj)}


def is_locust_user(obj: Any) -> bool:
    """True for a subclass of ``locust.User`` (checked by name: Locust is not imported)."""
    return inspect.isclass(obj) and "locust.user.users.User" in _mro_names(obj)


def is_seed_taskset(obj: Any) -> bool:
    """True for a class with a string ``endpoint`` and a callable ``test_endpoint``."""
    return (
        inspect.isclass(obj)
        and isinstance(getattr(obj, "endpoint", None), str)
        and callable(getattr(obj, "test_endpoint", None))
    )


def _check_taskset(obj: Any, where: str) -> None:
    if not inspect.isclass(obj):
        raise ConfigError(f"{where}: {obj!r} is not a class; expected a TaskSet class")
    missing = [
        a
        for a, ok in (
            ("endpoint", isinstance(getattr(obj, "endpoint", None), str)),
            ("test_endpoint", callable(getattr(obj, "test_endpoint", None))),
        )
        if not ok
    ]
    if missing:
        raise ConfigError(
            f"{where}: TaskSet {obj.__qualname__} lacks {' and '.join(missing)}; a seed-style "
            f"TaskSet needs a class attribute endpoint = '/path' and a method test_endpoint(self)"
        )


def weights_from(obj: Any) -> Mapping[Any, Any]:
    """The ``production_weights`` of a module or dotted module name, or ``obj`` if a mapping."""
    if isinstance(obj, str):
        try:
            obj = importlib.import_module(obj)
        except ImportError as exc:
            raise ConfigError(
                f"weights module {obj!r} cannot be imported ({exc}); put it on sys.path or "
                f"give the dotted name of an importable module"
            ) from None
    if isinstance(obj, types.ModuleType):
        weights = getattr(obj, "production_weights", None)
        if weights is None:
            raise ConfigError(
                f"weights module {obj.__name__} has no production_weights; define "
                f"production_weights = {{MyTaskSet: 50, OtherTaskSet: 50}}"
            )
        obj = weights
    if not isinstance(obj, Mapping):
        raise ConfigError(
            f"weights must be a mapping {{TaskSet: weight}}, got {type(obj).__name__}"
        )
    return obj


def taskset_weights(obj: Any, where: str = "weights") -> tuple[tuple[Any, float], ...]:
    """Validate a weights mapping: TaskSet classes, finite weights >= 0, not all zero."""
    weights = weights_from(obj)
    if not weights:
        raise ConfigError(f"{where}: the weights mapping is empty; give at least one TaskSet")
    out: list[tuple[Any, float]] = []
    seen: dict[str, str] = {}
    for cls, w in weights.items():
        _check_taskset(cls, where)
        try:
            wf = float(w)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: weight of {cls.__qualname__} is {w!r}, not a number"
            ) from None
        if not math.isfinite(wf) or wf < 0:
            raise ConfigError(
                f"{where}: weight of {cls.__qualname__} is {w!r}; weights must be >= 0"
            )
        if cls.endpoint in seen:
            raise ConfigError(
                f"{where}: {cls.__qualname__} and {seen[cls.endpoint]} share endpoint "
                f"{cls.endpoint!r}; endpoints name the results, so they must be unique"
            )
        seen[cls.endpoint] = cls.__qualname__
        out.append((cls, wf))
    if sum(w for _, w in out) <= 0:
        raise ConfigError(f"{where}: all weights are zero; give at least one TaskSet a weight > 0")
    return tuple(out)


def resolve_target(target: Any) -> TargetSpec:
    """Check ``target`` and turn it into a :class:`TargetSpec` (see module docstring)."""
    if is_locust_user(target):
        ref = ClassRef.of(target)
        return TargetSpec("user", ref, (), target.__qualname__)
    if is_seed_taskset(target):
        ref = ClassRef.of(target)
        return TargetSpec("tasksets", None, ((ref, 1.0, target.endpoint),), target.endpoint)
    if isinstance(target, Mapping | types.ModuleType | str):
        pairs = taskset_weights(target)
        label = "mix(" + ", ".join(f"{c.endpoint}:{w:g}" for c, w in pairs) + ")"
        return TargetSpec(
            "tasksets", None, tuple((ClassRef.of(c), w, c.endpoint) for c, w in pairs), label
        )
    if inspect.isclass(target):
        _check_taskset(target, "target")
    raise ConfigError(
        f"target {target!r} is not runnable: give a seed-style TaskSet (endpoint + test_endpoint), "
        f"a Locust User class, or a {{TaskSet: weight}} mapping / weights module"
    )


def import_class(ref: dict[str, Any]) -> type:
    """Import the class a :class:`ClassRef` dict names (used in the load driver)."""
    if ref.get("recipe"):
        return _from_recipe(ref["recipe"])
    module_name, qualname, file = ref["module"], ref["qualname"], ref.get("file")
    module = None
    if module_name == "__main__":
        module_name = "__mp_main__"  # like multiprocessing: a script's guard must not rerun it
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            module = None
    if module is None:
        if not file:
            raise ConfigError(f"cannot import {ref['module']}.{qualname}: no module file known")
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import {qualname} from {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]  # checked by the caller


# --------------------------------------------------------------------------- target factories


def _positive_int(name: str, value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: {name} must be an integer >= 1, got {value!r}")
    return value


def _openai_recipe(factory: str, kw: dict[str, Any]) -> dict[str, Any]:
    where = f"{factory}()"
    if not isinstance(kw["model"], str) or not kw["model"]:
        raise ConfigError(f"{where}: model must be the served model name, got {kw['model']!r}")
    _positive_int("prompt_tokens", kw["prompt_tokens"], where)
    _positive_int("max_tokens", kw["max_tokens"], where)
    if not (isinstance(kw["timeout_s"], int | float) and kw["timeout_s"] > 0):
        raise ConfigError(f"{where}: timeout_s must be > 0 seconds, got {kw['timeout_s']!r}")
    extra = kw["extra_body"]
    if extra is not None and not isinstance(extra, Mapping):
        raise ConfigError(f"{where}: extra_body must be a mapping of JSON fields, got {extra!r}")
    kw["extra_body"] = dict(extra) if extra else None
    return {"factory": factory, "kwargs": kw}


def openai_chat(
    *,
    model: str,
    prompt_tokens: int = 256,
    max_tokens: int = 128,
    path: str | None = None,
    name: str | None = None,
    include_usage: bool = True,
    extra_body: Mapping[str, Any] | None = None,
    api_key_env: str | None = None,
    timeout_s: float = 60.0,
) -> type:
    """A Locust User class streaming OpenAI chat completions, timed per token.

    Each request sends a synthetic prompt of ``prompt_tokens`` words (the first random, so
    prefix caches miss) with ``max_tokens``, ``stream: true`` and, if ``include_usage``,
    ``stream_options: {"include_usage": true}``; a server that refuses ``stream_options``
    with 400 is asked again without it, and output tokens are then counted from chunks. Each
    request reports TTFB, TTFT, the inter-chunk gaps, TPOT, output tokens and their source
    (see :mod:`pytest_mlload.load.streaming`). ``path`` defaults to
    ``/v1/chat/completions``; ``name`` (the results' endpoint name) to the path;
    ``extra_body`` adds request fields (e.g. ``{"ignore_eos": True}`` on vLLM for a fixed
    output length); ``api_key_env`` names an environment variable holding a bearer token
    (read in the load process, never stored). Importing Locust happens here, not at import.
    """
    kw = dict(locals())  # first: the arguments only
    from pytest_mlload.load.factories import build_openai_user

    return build_openai_user(_openai_recipe("openai_chat", kw), chat=True)


def openai_completions(
    *,
    model: str,
    prompt_tokens: int = 256,
    max_tokens: int = 128,
    path: str | None = None,
    name: str | None = None,
    include_usage: bool = True,
    extra_body: Mapping[str, Any] | None = None,
    api_key_env: str | None = None,
    timeout_s: float = 60.0,
) -> type:
    """Like :func:`openai_chat`, for the legacy ``/v1/completions`` endpoint (``prompt``)."""
    kw = dict(locals())  # first: the arguments only
    from pytest_mlload.load.factories import build_openai_user

    return build_openai_user(_openai_recipe("openai_completions", kw), chat=False)


def kserve_v2_infer(
    *,
    model: str,
    shape: tuple[int, ...] | list[int] = (1, 64),
    datatype: str = "FP32",
    input_name: str = "input",
    path: str | None = None,
    name: str | None = None,
    api_key_env: str | None = None,
    timeout_s: float = 10.0,
) -> type:
    """A Locust User class posting one random KServe v2 tensor to ``/v2/models/{model}/infer``.

    A request succeeds on HTTP 200 with an ``outputs`` field. ``shape`` and ``datatype``
    describe the input tensor (random data, drawn once per user).
    """
    kw: dict[str, Any] = dict(locals())  # first: the arguments only
    from pytest_mlload.load.factories import build_kserve_user

    where = "kserve_v2_infer()"
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{where}: model must be the model name, got {model!r}")
    dims = [_positive_int("each dimension of shape", n, where) for n in shape]
    if not dims:
        raise ConfigError(f"{where}: shape must have at least one dimension, got {shape!r}")
    kw["shape"] = dims
    return build_kserve_user({"factory": "kserve_v2_infer", "kwargs": kw})


_FACTORIES: dict[str, Callable[..., type]] = {
    "openai_chat": openai_chat,
    "openai_completions": openai_completions,
    "kserve_v2_infer": kserve_v2_infer,
}


def _from_recipe(recipe: Mapping[str, Any]) -> type:
    """Build a factory-made class again from its recipe (in the load driver)."""
    factory = _FACTORIES.get(str(recipe.get("factory")))
    if factory is None:
        raise ConfigError(
            f"unknown target factory {recipe.get('factory')!r}; known: {', '.join(_FACTORIES)}"
        )
    return factory(**recipe["kwargs"])
