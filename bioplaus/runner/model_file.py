"""Models from a Python file: ``bioplaus compare --model-file mynet.py:make_net``.

`register_model_file` imports the file, wraps the function so the model it returns goes
through `convert`, and registers the wrapper in the model registry, where
[`compare`][bioplaus.runner.compare] and configs find it by name like a built-in model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from bioplaus.core import TaskSpec, convert
from bioplaus.errors import ConfigError
from bioplaus.nets._registry import MODELS


class FileModel:
    """Model factory ``spec -> nn.Module`` around a user's function; the returned model is converted.

    The factory's keyword options are the function's, so ``model_options`` reach it.

    Args:
        function: ``function(spec, **options)`` or ``function(**options)``, returning an ``nn.Module``.
        where: ``PATH:FUNCTION``, for messages.
    """

    def __init__(self, function: Callable[..., Any], where: str):
        self.function = function
        self.where = where
        params = list(inspect.signature(function).parameters.values())
        first = params[0] if params else None
        self.takes_spec = first is not None and (
            first.kind in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD)
            and (first.name == "spec" or first.default is first.empty)
        )
        options = params[1:] if self.takes_spec else params
        spec = inspect.Parameter("spec", inspect.Parameter.POSITIONAL_ONLY, annotation=TaskSpec)
        self.__signature__ = inspect.Signature([spec, *options])

    def __call__(self, spec: TaskSpec, **options: Any) -> nn.Module:
        model = self.function(spec, **options) if self.takes_spec else self.function(**options)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model file {self.where} returned a {type(model).__name__}, not a torch.nn.Module")
        return convert(model)


def register_model_file(spec_text: str) -> str:
    """Register the model that ``PATH:FUNCTION`` builds; return its registry name.

    The file is imported as a module of its own (its folder is not put on ``sys.path``), and
    ``FUNCTION`` (a function or a class) is called with the task's
    [`TaskSpec`][bioplaus.core.spec.TaskSpec] (``.input_shape``, ``.n_out``) if its first parameter is
    called ``spec`` or has no default, else with no argument; any other parameters are model
    options (``--set model_options.width=32``). The plain torch model it returns is passed
    through `convert`, so every layer-generic rule can train it.

    The name is ``file:FILENAME:FUNCTION`` (``file:mynet.py:make_net``), which no built-in
    model has. Registering the same name again (the same file, say, after an edit) imports
    the file anew and replaces the entry. Worker processes of a sweep do not know the name:
    use it in ``compare`` and ``run``, or in a sweep with one worker.

    Args:
        spec_text: ``PATH:FUNCTION``, e.g. ``nets/mynet.py:make_net``.

    Returns:
        The model's name in the registry, to pass as ``model=`` to
        [`compare`][bioplaus.runner.compare] or as ``model`` in a config.

    Raises:
        ConfigError: for text without ``:``, a missing file, a file that raises on import, or a
            missing or non-callable ``FUNCTION``.
    """
    path_text, sep, function_name = spec_text.rpartition(":")
    if not sep or not path_text or not function_name:
        raise ConfigError(f"--model-file expects PATH:FUNCTION (e.g. mynet.py:make_net), got {spec_text!r}")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"model file '{path_text}' does not exist (from {spec_text!r})")
    module = _import_file(path.resolve())
    function = getattr(module, function_name, None)
    if function is None:
        names = sorted(
            n for n, v in vars(module).items() if callable(v) and getattr(v, "__module__", None) == module.__name__
        )
        raise ConfigError(
            f"model file '{path_text}' has no function '{function_name}'; it defines: {', '.join(names) or 'none'}"
        )
    if not callable(function):
        raise ConfigError(
            f"'{function_name}' in model file '{path_text}' is a {type(function).__name__}, not a function"
        )
    name = f"file:{path.name}:{function_name}"
    MODELS.register(name, FileModel(function, spec_text), description=f"{function_name} from {path_text}, converted")
    return name


def _import_file(path: Path) -> Any:
    """Import ``path`` as a module named after its resolved path (the same file gets the same name)."""
    module_name = f"_bioplaus_model_file_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"model file '{path}' cannot be imported as Python (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickle look classes up by their module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if Path(f.filename) == path]
        line = getattr(err, "lineno", None) if isinstance(err, SyntaxError) else (lines[-1] if lines else None)
        at = f" at line {line}" if line else ""
        raise ConfigError(f"importing model file '{path}' raised {type(err).__name__}{at}: {err}") from err
    return module
