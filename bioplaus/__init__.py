"""bioplaus: biologically plausible credit assignment in PyTorch, held against backprop.

>>> import bioplaus
>>> result = bioplaus.compare(model="mlp", rules=["bp", "fa", "dfa"], task="digits", seeds=2)  # doctest: +SKIP
>>> result.summary  # doctest: +SKIP
"""

__version__ = "0.1.0"

from bioplaus import analysis, core, data, nets, results, rules, tasks  # noqa: E402
from bioplaus.core import Context, Rule, convert  # noqa: E402
from bioplaus.huge_pages import enable_huge_pages  # noqa: E402
from bioplaus.runner import Comparison, RunConfig, compare, sweep  # noqa: E402

__all__ = [
    "Comparison",
    "Context",
    "Rule",
    "RunConfig",
    "__version__",
    "analysis",
    "compare",
    "convert",
    "core",
    "data",
    "enable_huge_pages",
    "nets",
    "results",
    "rules",
    "sweep",
    "tasks",
]
