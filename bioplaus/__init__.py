"""bioplaus: biologically plausible credit assignment in PyTorch, held against backprop.

>>> import bioplaus
>>> result = bioplaus.compare(model="mlp", rules=["bp", "fa", "dfa"], task="digits", seeds=2)  # doctest: +SKIP
>>> result.summary  # doctest: +SKIP
"""

import os

# Back large CPU tensors with transparent huge pages (PyTorch's THP_MEM_ALLOC_ENABLE, read at the
# first allocation): a fresh 256 MB activation map then costs ~17 ms instead of ~65 ms of page
# faults on a 2-core CPU, which halves a vectorized conv step. Set THP_MEM_ALLOC_ENABLE=0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"

from bioplaus import analysis, core, data, nets, results, rules, tasks  # noqa: E402
from bioplaus.core import Context, Rule, convert  # noqa: E402
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
    "nets",
    "results",
    "rules",
    "sweep",
    "tasks",
]
