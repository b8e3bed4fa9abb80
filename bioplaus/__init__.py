"""bioplaus: biologically plausible credit assignment in PyTorch, held against backprop.

>>> import bioplaus
>>> result = bioplaus.compare(model="mlp", rules=["bp", "fa", "dfa"], task="digits", seeds=2)  # doctest: +SKIP
>>> result.summary  # doctest: +SKIP
"""

__version__ = "0.1.0"

from bioplaus import analysis, core, data, nets, rules, tasks  # noqa: E402
from bioplaus.core import Context, Rule  # noqa: E402
from bioplaus.runner import Comparison, RunConfig, compare  # noqa: E402

__all__ = [
    "Comparison",
    "Context",
    "Rule",
    "RunConfig",
    "__version__",
    "analysis",
    "compare",
    "core",
    "data",
    "nets",
    "rules",
    "tasks",
]
