"""What ``mlload.run(target)`` accepts, checked without importing Locust.

A target is one of:

* a seed-style TaskSet (as in ml-loadtest): a class with a string ``endpoint`` attribute and a
  ``test_endpoint()`` method, which sends its request(s) through ``self.client``;
* a plain Locust ``User`` class (``HttpUser``, ``FastHttpUser`` or your own);
* a weights mapping ``{TaskSet: weight}`` (the ml-loadtest ``production_weights`` contract), a
  module holding ``production_weights``, or that module's dotted name.

The load itself runs in a child process, so a target travels as a :class:`TargetSpec`: the
module and qualified name of each class, which the child imports again.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_mlload.errors import ConfigError

__all__ = ["ClassRef", "TargetSpec", "is_locust_user", "is_seed_taskset", "resolve_target"]


@dataclass(frozen=True, slots=True)
class ClassRef:
    """Where a class lives, so another process can import it."""

    module: str
    qualname: str
    file: str | None

    @classmethod
    def of(cls, obj: type) -> ClassRef:
        """Reference to ``obj``; refuses classes another process cannot import."""
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
        return {"module": self.module, "qualname": self.qualname, "file": self.file}


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
