"""CEL expressions and ``${{ <CEL> }}`` templates (see ``core`` for the names in scope,
``functions`` for the functions beyond CEL's own, ``templates`` for interpolation)."""

from braid.expressions.core import (
    COST_BUDGET,
    MAX_NESTING,
    MAX_SOURCE,
    Comprehension,
    Expression,
    ExpressionError,
    Refs,
    clip,
    compile_expression,
    comprehensions,
    largest_collection,
)
from braid.expressions.templates import (
    Template,
    ValueTemplate,
    compile_template,
    compile_value_template,
)
from braid.expressions.values import render_scalar, to_json, type_name

__all__ = [
    "COST_BUDGET",
    "MAX_NESTING",
    "MAX_SOURCE",
    "Comprehension",
    "Expression",
    "ExpressionError",
    "Refs",
    "Template",
    "ValueTemplate",
    "clip",
    "compile_expression",
    "compile_template",
    "compile_value_template",
    "comprehensions",
    "largest_collection",
    "render_scalar",
    "to_json",
    "type_name",
]
