"""``convert``: any torch model becomes one that the layer-generic rules (FA, DFA, …) can train.

Rules configure [`Layer`][bioplaus.core.layers.Layer] modules; a model
built from ``torch.nn.Linear`` and ``torch.nn.Conv2d`` has none. `convert` swaps each of
those for the bioplaus layer that computes the same thing with the *same* ``Parameter``
objects, and leaves every other module (BatchNorm, pooling, dropout, residual blocks, the
model's own ``forward``) as it is.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from bioplaus.core.layers import Conv2d, Layer, Linear
from bioplaus.errors import ConfigError

_CONVERTIBLE = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class _Swap:
    """One child to replace: ``parent.<name>`` is the torch module ``old``, found at ``path``."""

    parent: nn.Module
    name: str
    old: nn.Module
    path: str


def convert(model: nn.Module, *, inplace: bool = True) -> nn.Module:
    """Swap every ``torch.nn.Linear`` and ``torch.nn.Conv2d`` inside ``model`` for a bioplaus layer.

    A rule such as ``fa`` or ``dfa`` trains a model by configuring its bioplaus layers (what to
    record, which feedback weights to send errors through). After ``convert``, any torch model
    (``nn.Sequential`` or a class of your own, with BatchNorm, residual connections, pooling,
    dropout, nested blocks, ``ModuleList`` and ``ModuleDict``) has such layers, and every
    layer-generic rule trains it.

    What stays the same:

    - **the outputs**, bit for bit: each new layer runs the very same ``F.linear`` /
      ``F.conv2d`` call as the module it replaces (until a rule configures it);
    - **the parameters**: the new layer holds the old layer's ``weight`` and ``bias``
      ``Parameter`` objects themselves (``new.weight is old.weight``), with their device, dtype
      and ``requires_grad``, so an optimizer built before or after ``convert`` and your own
      references to the parameters keep working; ``state_dict`` keys do not change;
    - every other module, which is not replaced: hooks on them and references to them keep working.

    What changes:

    - ``model.fc`` is now a [`Linear`][bioplaus.core.layers.Linear] (``model.conv`` a
      [`Conv2d`][bioplaus.core.layers.Conv2d]); torch-only attributes such as ``conv.stride`` are not
      there (the bioplaus layer keeps them in ``conv.op``), and a converted ``Conv2d`` takes
      batched ``(batch, channels, height, width)`` inputs only;
    - a module to be replaced that carries hooks raises ``ConfigError``, since its hooks would
      silently stop firing: register them on the converted layer instead.

    Not converted, with a ``ConfigError`` naming the module's path and the fix (the model is
    left unchanged): ``padding_mode`` other than ``"zeros"``; ``padding="same"`` that needs
    uneven padding (an even kernel with odd dilation; ``"same"`` with a symmetric padding is
    converted to that padding, and ``"valid"`` to 0); subclasses of ``nn.Linear`` /
    ``nn.Conv2d`` with their own ``forward``, which a bioplaus layer would not run; weights
    under ``parametrize``, ``weight_norm``, ``spectral_norm`` or pruning; lazy modules not yet
    run. Subclasses that keep torch's ``forward`` (``nn.MultiheadAttention``'s ``out_proj``,
    whose weight the attention reads directly) are left as torch modules, with a warning:
    the rules then see no layer there, and autograd trains their weights with whatever error
    reaches them. Other modules with weights (``Conv1d``, ``ConvTranspose2d``, ``Embedding``,
    ``nn.LSTM``, …) stay torch modules in the same way, without a warning.

    Converting twice is a no-op: bioplaus layers are left alone. DFA takes the model's last
    bioplaus layer in registration order as its output layer, so define the head last in
    ``__init__``.

    Args:
        model: any torch module (it may itself be an ``nn.Linear`` or ``nn.Conv2d``).
        inplace: replace the layers inside ``model`` (``True``) or inside a deep copy of it.

    Returns:
        The converted model: ``model`` itself when ``inplace`` (unless ``model`` is itself an
        ``nn.Linear`` / ``nn.Conv2d``, which is returned converted), else the copy.

    Raises:
        ConfigError: a layer cannot be represented by a bioplaus layer (see above).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import bioplaus
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
        >>> weight = net[0].weight
        >>> net = bioplaus.convert(net)
        >>> type(net[0]).__name__, net[0].weight is weight
        ('Conv2d', True)
        >>> fa = bioplaus.rules.get("fa")
        >>> fa.attach(net)  # feedback alignment now trains the conv and the head
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"convert expects a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    skipped: list[str] = []
    if _wants_swap(model, "the model itself", skipped):
        return _replacement(model)
    swaps: list[_Swap] = []
    for parent_path, parent in model.named_modules(remove_duplicate=False):
        if isinstance(parent, Layer):
            continue
        for name, child in parent._modules.items():
            path = f"{parent_path}.{name}" if parent_path else name
            if child is not None and _wants_swap(child, path, skipped):
                swaps.append(_Swap(parent, name, child, path))
    if skipped:
        warnings.warn(
            f"convert left {', '.join(skipped)} as torch modules (subclasses of nn.Linear / nn.Conv2d that keep "
            "torch's forward; their owner may read the weight directly, as nn.MultiheadAttention does): rules "
            "do not configure them, and autograd trains their weights",
            UserWarning,
            stacklevel=2,
        )
    new: dict[int, Layer] = {}  # a module registered twice (shared weights) gets one replacement
    for swap in swaps:
        layer = new.get(id(swap.old))
        if layer is None:
            layer = new[id(swap.old)] = _replacement(swap.old)
        setattr(swap.parent, swap.name, layer)
    return model


def _wants_swap(module: nn.Module, path: str, skipped: list[str]) -> bool:
    """Whether ``module`` is to be replaced; raises ``ConfigError`` when it should be but cannot.

    Subclasses that keep torch's ``forward`` are appended to ``skipped`` (their path and class).
    """
    if isinstance(module, Layer) or not isinstance(module, _CONVERTIBLE):
        return False
    kind = nn.Linear if isinstance(module, nn.Linear) else nn.Conv2d
    where = f"{path} ({type(module).__name__})"
    if type(module) is not kind:
        if parametrize.is_parametrized(module):
            raise ConfigError(
                f"convert: {where} has parametrized weights (torch.nn.utils.parametrize), which a bioplaus layer "
                "cannot represent: remove the parametrization first (parametrize.remove_parametrizations)"
            )
        if isinstance(module, nn.modules.lazy.LazyModuleMixin):
            raise ConfigError(
                f"convert: {where} is a lazy module whose shape is not known yet: run one forward pass "
                "before convert, or give it its input size"
            )
        if type(module).forward is not kind.forward:
            raise ConfigError(
                f"convert: {where} is a subclass of {kind.__name__} with its own forward, which a bioplaus "
                f"layer would not run: make it a plain nn.{kind.__name__}, or build it from "
                f"bioplaus.core.{kind.__name__}"
            )
        skipped.append(where)
        return False
    for name in ("weight", "bias"):
        value = getattr(module, name)
        if not (isinstance(value, nn.Parameter) or (name == "bias" and value is None)):
            raise ConfigError(
                f"convert: the {name} of {where} is not a Parameter (weight_norm, spectral_norm or pruning computes it "
                "in a hook), which a bioplaus layer cannot represent: remove the reparametrization first"
            )
    hooks = [name for name, value in vars(module).items() if name.endswith("_hooks") and value]
    if hooks:
        raise ConfigError(
            f"convert: {where} has hooks ({', '.join(hooks)}), which would stop firing once the module is "
            "replaced: remove them, convert, and register them on the converted layer"
        )
    if kind is nn.Conv2d:
        if module.padding_mode != "zeros":
            raise ConfigError(
                f"convert: {where} has padding_mode={module.padding_mode!r}, and bioplaus.core.Conv2d pads with "
                f"zeros only: pad explicitly before the conv (e.g. nn.ReflectionPad2d) and give the conv padding=0"
            )
        _padding(module, where)
    return True


def _padding(conv: nn.Conv2d, where: str) -> tuple[int, int]:
    """``conv``'s padding as per-axis integers (``"valid"`` is 0, ``"same"`` half the kernel's reach)."""
    if conv.padding == "valid":
        return 0, 0
    if conv.padding != "same":
        return conv.padding
    reach = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation, strict=True)]
    if any(r % 2 for r in reach):
        raise ConfigError(
            f"convert: {where} has padding='same' with kernel_size={conv.kernel_size} and "
            f"dilation={conv.dilation}, which pads unevenly (one more row or column at the end), and "
            "bioplaus.core.Conv2d pads evenly: use an odd kernel, or pad explicitly with "
            "nn.ZeroPad2d((left, right, top, bottom)) before the conv and give it padding=0"
        )
    return reach[0] // 2, reach[1] // 2


def _replacement(old: nn.Module) -> Layer:
    """The bioplaus layer computing what ``old`` computes, holding ``old``'s parameters."""
    with torch.device("meta"):  # no memory and no random draws for weights that are replaced at once
        if isinstance(old, nn.Linear):
            layer: Layer = Linear(old.in_features, old.out_features, bias=old.bias is not None)
        else:
            layer = Conv2d(
                old.in_channels,
                old.out_channels,
                old.kernel_size,
                stride=old.stride,
                padding=_padding(old, type(old).__name__),
                dilation=old.dilation,
                groups=old.groups,
                bias=old.bias is not None,
            )
    layer.weight = old.weight
    layer.bias = old.bias
    layer.train(old.training)
    return layer
