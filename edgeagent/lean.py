"""A lean start: fewer collector passes while the agent starts, and no search for pydantic plugins.

Start-up allocates hundreds of thousands of objects (modules, classes, schemas) and frees few:
with CPython's default threshold, the collector passes over the young ones every 700 allocations,
about 5 % of the start-up time, for almost no garbage. `start_up_gc()` makes those passes rarer
until `serving_gc()`, once the agent is up; the collector never stops, so no garbage piles up.
It also makes the middle passes rare (every 100 young ones, not 10): what outlives a young pass
while the agent starts is its modules, classes and schemas, which `freeze_start_up()` sets aside
once it is up anyway, and walking them again took a middle pass 5 to 9 ms, about 4 % of the
start-up time, to find nothing (0 to 31 objects).

Even rare, the young passes walked every object the start-up imports made once, before it was
frozen at the end: 14 passes, 11 to 13 ms of the start. `importing()` wraps the start-up's big
imports (the CLI, the config loader, each component's module, the service): the collector pauses
for the import, and what it made is frozen at once, unwalked. Before the import a pass over the
young objects frees what the start-up left since the last one (argparse's parser is cyclic), so
only the imports' own garbage is frozen with them: about 500 objects, 0.1 MiB (classes that
dataclasses and enum made and replaced), kept as long as the process, or until a reload's
`refreeze()`. Outside a start (a CLI verb, a reload) `importing()` does nothing.

A serving agent makes its young passes rarer still (`serving_gc()`). Each request makes
hundreds of short-lived objects the collector tracks (protobuf's span objects among them), so
at CPython's 700 a young pass came every request or two, walking whatever was alive at that
moment, and the many young passes pushed the middle and full ones: a busy tail-sampling agent
spent 6 % of its CPU in the collector. At 50,000 it spends 2 %: what a pass walks is mostly
what lived through it anyway (the buffer's entries, untracked at their first pass). A pass then
takes up to ~10 ms, a few times a second at most; cyclic garbage waits a little longer, still
bounded by the threshold. `steady_gc()` restores CPython's thresholds (a CLI verb, tests).

Once `run` is up, `freeze_start_up()` freezes what start-up built (gc.freeze: about 50,000
objects that live as long as the process): the collector's full passes, which a busy agent makes
a few times a second, then walk only what was made since, not every module and schema again (a
busy tail-sampling agent spent 3 % of its CPU on that walk). A config reload replaces components:
`refreeze()` collects what the old ones left (once) and freezes the new ones.

pydantic looks for plugins (entry points of every installed distribution) when it builds its
first model, and the module that looks imports importlib.metadata, with email, zipfile and csv:
9 ms of the 0.2 s start-up and 2 MiB of the idle memory, for plugins edgeagent never runs on its
config. `no_pydantic_plugins()` puts a stand-in for that module in its place, whose
`get_plugins()` finds none, as `PYDANTIC_DISABLE_PLUGINS=__all__` would. It is called when the
`edgeagent` package is imported, before any model is built; when the real module is loaded
already it does nothing.

Building a model's validator, pydantic asks of each field's default factory whether it takes the
validated data, by reading its signature. For `list`, `dict` and `set`, the factories of most of
our list and mapping settings, inspect finds no Python signature and parses the type's text one
with the tokenizer: 50 to 100 us each, and 2.5 ms for the tokenizer's expressions the first time,
about 8 ms of validating the embedded default, for an answer that is always no.
`builtin_factories_take_no_data()` answers that for them at once and asks pydantic for any other
factory; with a pydantic that asks no such question it does nothing.
"""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_START_UP_THRESHOLD = 5000  # young objects between passes (CPython's default: 700)
_START_UP_MIDDLE = 100  # young passes between middle ones (CPython's default: 10)
_SERVING_THRESHOLD = 50_000
_steady: tuple[int, int, int] | None = None
_starting = False  # from start_up_gc() to serving_gc() or steady_gc()


def start_up_gc() -> None:
    global _steady, _starting
    if _steady is None:
        _steady = gc.get_threshold()
        gc.set_threshold(_START_UP_THRESHOLD, _START_UP_MIDDLE, _steady[2])
        _starting = True


def serving_gc() -> None:
    """Once `run` is up: young passes at _SERVING_THRESHOLD (CPython's thresholds kept for steady_gc)."""
    global _steady, _starting
    if _steady is None:
        _steady = gc.get_threshold()
    gc.set_threshold(_SERVING_THRESHOLD, *_steady[1:])
    _starting = False


def steady_gc() -> None:
    global _steady, _starting
    if _steady is not None:
        gc.set_threshold(*_steady)
        _steady = None
    _starting = False


@contextmanager
def importing() -> Iterator[None]:
    """Imports while the agent starts: what they make is frozen without a pass over it."""
    if not _starting or not gc.isenabled():
        yield
        return
    gc.collect(1)  # what start-up made before the imports: its garbage is freed, not frozen
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def freeze_start_up() -> None:
    gc.freeze()


def refreeze() -> None:
    """After a config reload: what was frozen may be garbage now."""
    if gc.get_freeze_count():
        gc.unfreeze()
        gc.collect()
        gc.freeze()


_PYDANTIC_PLUGIN_LOADER = "pydantic.plugin._loader"


def no_pydantic_plugins() -> None:
    if _PYDANTIC_PLUGIN_LOADER in sys.modules:
        return
    stand_in = types.ModuleType(_PYDANTIC_PLUGIN_LOADER, "edgeagent runs no pydantic plugins (lean.py)")
    stand_in.get_plugins = lambda: ()  # type: ignore[attr-defined]  # the one name pydantic imports from it
    sys.modules[_PYDANTIC_PLUGIN_LOADER] = stand_in


_BUILTIN_FACTORIES = frozenset({list, dict, set, frozenset, tuple, bytearray})


def builtin_factories_take_no_data() -> None:
    """Before the config models are built (config/loader.py imports pydantic, then calls this)."""
    from pydantic._internal import _fields, _generate_schema

    ask = getattr(_fields, "takes_validated_data_argument", None)
    if ask is None or getattr(ask, "__wrapped__", None) is not None:
        return

    def takes_validated_data_argument(factory: Callable[..., object]) -> bool:
        return False if isinstance(factory, type) and factory in _BUILTIN_FACTORIES else ask(factory)

    takes_validated_data_argument.__wrapped__ = ask  # type: ignore[attr-defined]
    # (pydantic annotates its answer as a TypeIs: a plain bool is the same at run time)
    _fields.takes_validated_data_argument = takes_validated_data_argument  # type: ignore[assignment]
    if getattr(_generate_schema, "takes_validated_data_argument", None) is ask:  # imported by name there
        _generate_schema.takes_validated_data_argument = takes_validated_data_argument  # type: ignore[assignment]
