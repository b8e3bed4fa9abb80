"""The rule registry (kept apart from ``bioplaus.rules.__init__`` so rule modules can import it)."""

from __future__ import annotations

from bioplaus.core.rule import Rule
from bioplaus.registry import Registry

RULES: Registry[Rule] = Registry("rule")
register = RULES.register
