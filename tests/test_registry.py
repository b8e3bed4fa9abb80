"""The registries: every package registers its own names, a name is registered once, option types."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pytest

from bioplaus.errors import ConfigError
from bioplaus.nets._registry import MODELS
from bioplaus.registry import Registry
from bioplaus.runner import RunConfig
from bioplaus.runner.option_types import check_value, describe

if TYPE_CHECKING:
    from pathlib import Path  # an annotation that typing.get_type_hints cannot resolve at run time

# Imports one package with a stand-in for bioplaus/__init__.py (which imports every package),
# then prints the names its registry holds and the bioplaus modules that were imported.
IMPORT_ALONE = """
import importlib, importlib.util, json, sys, types
parent = types.ModuleType("bioplaus")
parent.__path__ = list(importlib.util.find_spec("bioplaus").submodule_search_locations)
sys.modules["bioplaus"] = parent
package = importlib.import_module(sys.argv[1])
print(json.dumps({"names": package.available(), "modules": sorted(m for m in sys.modules if m.startswith("bioplaus"))}))
"""

EXPECTED = {
    "bioplaus.nets": [
        "ad",
        "attn_lstm",
        "conventional_conv",
        "conventional_fc",
        "conventional_lc",
        "convnet",
        "lstm",
        "mlp",
        "popsan",
        "rate_rnn",
        "sab_lstm",
        "vnn",
        "vnn_conv",
        "vnn_lc",
    ],
    "bioplaus.rules": [
        "bp",
        "bptt",
        "dfa",
        "distributed_td",
        "fa",
        "fed",
        "gevb",
        "kolen_pollack",
        "online_bptt",
        "rflo",
        "scalar_bp",
        "sign_symmetry",
        "tbptt",
        "tbptt_stream",
        "weight_mirror",
    ],
    "bioplaus.tasks": [
        "adding",
        "cifar10",
        "copy",
        "delayed-recall",
        "digits",
        "fashion-mnist",
        "mnist",
        "pixel-fashion-mnist",
        "pixel-mnist",
        "reach-adaptation",
        "reach-adaptation-grid",
        "reaching",
        "rl",
        "synthetic",
        "td3",
    ],
}
# packages whose import would register names of another kind behind the package's back
UNRELATED = {"bioplaus.nets": ("bioplaus.rules", "bioplaus.tasks"), "bioplaus.rules": ("bioplaus.tasks",)}


def _import_alone(package: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", IMPORT_ALONE, package], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "package",
    [
        "bioplaus.nets",
        "bioplaus.rules",
        "bioplaus.tasks",
    ],
)
def test_each_package_registers_all_its_names_on_its_own(package):
    found = _import_alone(package)
    assert found["names"] == EXPECTED[package]
    for other in UNRELATED.get(package, ()):
        assert other not in found["modules"], f"importing {package} imported {other}"


def test_the_full_package_holds_exactly_the_expected_names():
    import bioplaus

    assert bioplaus.nets.available() == EXPECTED["bioplaus.nets"]
    assert bioplaus.rules.available() == EXPECTED["bioplaus.rules"]
    assert bioplaus.tasks.available() == EXPECTED["bioplaus.tasks"]


# --- registering a name twice -------------------------------------------------------------------


def _defined_in_a_cell() -> type:
    """A class as a notebook cell defines it: run the cell again and it is a new class with the same name."""

    class Cell:
        """A cell's factory."""

    return Cell


class Other:
    """Another factory."""


def test_a_name_is_registered_once():
    registry: Registry[Any] = Registry("rule")
    registry.register("x", _defined_in_a_cell())
    with pytest.raises(ConfigError) as err:
        registry.register("x", Other)
    here = _defined_in_a_cell.__module__
    message = str(err.value)
    assert f"rule 'x' is already registered to {here}._defined_in_a_cell.<locals>.Cell; " in message
    assert f"cannot register {here}.Other under the same name" in message and "replace=True" in message
    assert registry.entry("x").factory is not Other


def test_the_same_factory_defined_again_replaces_the_old_one():
    registry: Registry[Any] = Registry("rule")
    first, again = _defined_in_a_cell(), _defined_in_a_cell()
    assert first is not again
    registry.register("x", first)
    registry.register("x", again)
    assert registry.entry("x").factory is again


def test_replace_overrides_deliberately():
    registry: Registry[Any] = Registry("model")
    registry.register("x", _defined_in_a_cell())
    assert registry.register("x", Other, replace=True) is Other
    decorated = registry.register("x", replace=True)(_defined_in_a_cell())
    assert registry.entry("x").factory is decorated


def test_a_callable_object_is_named_by_its_class():
    class Factory:
        def __call__(self, spec: Any) -> None: ...

    registry: Registry[Any] = Registry("model")
    registry.register("x", Factory())
    registry.register("x", Factory())  # the same kind of object again: replaced
    with pytest.raises(ConfigError, match=r"already registered to .*<locals>\.Factory; cannot register .*\.Other"):
        registry.register("x", Other)


# --- option types -------------------------------------------------------------------------------


@dataclass
class Readout:
    """A dataclass option."""

    width: int
    scale: float = 1.0


def typed_model(
    spec: Any,
    counts: dict[str, int] | None = None,
    extra: dict[str, Any] | None = None,
    hidden: Sequence[int] = (8,),
    shape: tuple[int, ...] = (1, 2),
    pair: tuple[int, str] = (1, "a"),
    activation: Literal["relu", "tanh"] = "relu",
    bias: bool = True,
    clip: float | None = None,
    readout: Readout | None = None,
    size: int | Sequence[int] = 4,
    where: Path | None = None,
    untyped=0.5,
) -> None:
    """A model factory whose options cover the hints the checker reads."""


@pytest.fixture
def typed():
    MODELS.register("test_typed_options", typed_model)
    yield (
        lambda **options: (
            RunConfig.from_dict(
                {"task": "synthetic", "model": "test_typed_options", "model_options": options}
            ).model_options
        )
    )
    MODELS._entries.pop("test_typed_options")


def test_good_option_values_are_converted(typed):
    options = typed(
        counts={"a": 1},
        extra={"any": [1, "x"]},
        hidden=[16, 16],
        shape=[3, 4, 5],
        pair=[2, "b"],
        activation="tanh",
        bias=False,
        clip=1,
        readout={"width": 3, "scale": 2},
        size=[1, 2],
        where="/tmp/x",
        untyped=1,
    )
    assert options["counts"] == {"a": 1} and options["extra"] == {"any": [1, "x"]}
    assert options["hidden"] == [16, 16] and options["shape"] == (3, 4, 5) and options["pair"] == (2, "b")
    assert options["clip"] == 1.0 and isinstance(options["clip"], float)
    assert options["readout"] == Readout(3, 2.0) and isinstance(options["readout"].scale, float)
    assert options["size"] == [1, 2] and options["where"] == "/tmp/x"  # an unresolved annotation accepts
    assert options["untyped"] == 1.0 and isinstance(options["untyped"], float)  # the default's type: float
    assert typed(readout=Readout(1))["readout"] == Readout(1)
    assert typed(size=3)["size"] == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"counts": 3}, "model_options.counts expects a table, got 3"),
        ({"counts": {"a": "many"}}, "model_options.counts.a expects an integer, got 'many'"),
        ({"extra": [1]}, "model_options.extra expects a table, got [1]"),
        ({"hidden": 3}, "model_options.hidden expects a list, got 3"),
        ({"hidden": "16"}, "model_options.hidden expects a list, got '16'"),
        ({"hidden": [16, 1.5]}, "model_options.hidden[1] expects an integer, got 1.5"),
        ({"shape": [1, True]}, "model_options.shape[1] expects an integer, got True"),
        ({"pair": [1]}, "model_options.pair expects a list of 2 items (an integer, a string), got [1] (1 item)"),
        (
            {"activation": "relux"},
            "model_options.activation expects one of 'relu', 'tanh', got 'relux' (did you mean 'relu'?)",
        ),
        ({"bias": 1}, "model_options.bias expects a boolean (true/false), got 1"),
        ({"clip": "high"}, "model_options.clip expects a number, got 'high'"),
        ({"readout": 3}, "model_options.readout expects a table of Readout fields (width, scale), got 3"),
        (
            {"readout": {"widht": 3}},
            "model_options.readout has no field 'widht' (did you mean 'width'?); Readout's fields: width, scale",
        ),
        ({"readout": {"scale": 2.0}}, "model_options.readout (Readout) needs the field(s) width"),
        ({"readout": {"width": 2.5}}, "model_options.readout.width expects an integer, got 2.5"),
        ({"size": "big"}, "model_options.size expects an integer or a list of integers, got 'big'"),
        ({"untyped": "x"}, "model_options.untyped expects a number, got 'x'"),
    ],
)
def test_bad_option_values_name_the_key_the_type_and_the_value(typed, options, message):
    with pytest.raises(ConfigError) as err:
        typed(**options)
    assert message in str(err.value)


def test_none_only_where_the_hint_allows_it():
    assert check_value(None, float | None, "k") is None
    with pytest.raises(ConfigError, match="k expects an integer, got None"):
        check_value(None, int, "k")


def test_literal_keeps_booleans_and_numbers_apart():
    assert check_value(1, Literal[1, 2], "k") == 1
    with pytest.raises(ConfigError, match="k expects one of 1, 2, got True"):
        check_value(True, Literal[1, 2], "k")


@pytest.mark.parametrize(
    ("hint", "words"),
    [
        (Sequence[int], "a list of integers"),
        (list[float] | None, "a list of numbers or None"),
        (tuple[int, ...], "a list of integers"),
        (dict[str, Any], "a table"),
        (dict[str, list[int]], "a table of lists of integers"),
        (dict[int, str], "a table of strings with integers as keys"),
        (Literal["a", "b"], "one of 'a', 'b'"),
        (list[Literal["a", "b"]], "a list of values among 'a', 'b'"),
        (Any, "anything"),
    ],
)
def test_hints_in_words(hint, words):
    assert describe(hint) == words


def test_a_rule_option_of_a_builtin_is_read_from_its_hint():
    cfg = RunConfig.from_dict({"rules": ["bp", "fa"], "rule_options": {"fa": {"scale": 2, "seed": 3}}})
    assert cfg.rule_options["fa"] == {"scale": 2.0, "seed": 3}
    with pytest.raises(ConfigError, match="rule_options.fa.seed expects an integer, got 'x'"):
        RunConfig.from_dict({"rules": ["bp", "fa"], "rule_options": {"fa": {"seed": "x"}}})
