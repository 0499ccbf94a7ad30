"""S3 strategy helpers: the L1 rules DSL (pure, no I/O)."""

from chimera.handlers.strategy.dsl import (
    ACTIONS,
    DEFAULT_FIELDS,
    CompiledRuleSet,
    RuleOutcome,
    compile_rules,
    time_fields,
)
from chimera.handlers.strategy.dsl_expr import Field
from chimera.handlers.strategy.dsl_lex import RuleError

__all__ = [
    "ACTIONS",
    "DEFAULT_FIELDS",
    "CompiledRuleSet",
    "Field",
    "RuleError",
    "RuleOutcome",
    "compile_rules",
    "time_fields",
]
