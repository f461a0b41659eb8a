"""Safe arithmetic for recipe ``eval(...)`` values: an allow-listed AST walk, never Python's eval.

SparseML recipes write computed values as ``eval(num_epochs - 2)``. We parse the
expression with `ast` and evaluate only what a schedule needs: numbers, short string
literals, + - * / // % **, unary +/-, comparisons, and/or/not, ``a if c else b``, recipe
variable names and calls to min/max/abs/round. Anything else (attribute access,
subscripts, other calls, lambdas, comprehensions, f-strings, ...) is rejected with a
`RecipeError` naming the expression. Arithmetic only accepts numbers (so
``"a" * 10**9`` cannot allocate), and integer results are capped in size so
``9**9**9`` fails fast instead of hanging.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from sparse_transfer.errors import RecipeError

#: Longest expression we parse (deeply nested input can exhaust the parser's stack).
MAX_EXPRESSION_CHARS = 1000
#: Longest string literal accepted (for comparisons such as ``lr_func == "linear"``).
MAX_STRING_CHARS = 64
#: Largest integer result, in bits (10**300 fits; 9**9**9 does not).
MAX_INT_BITS = 1024
#: Largest absolute exponent for ``**``.
MAX_EXPONENT = 1024

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_FUNCS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "abs": abs, "round": round}


class ExpressionError(RecipeError):
    """An ``eval(...)`` expression that is not allowed or cannot be computed."""

    def __init__(self, expression: str, reason: str):
        super().__init__(f"expression '{expression}': {reason}")
        self.expression = expression
        self.reason = reason


Lookup = Mapping[str, Any] | Callable[[str], Any]


def evaluate(expression: str, variables: Lookup) -> Any:
    """Evaluates one recipe expression over the recipe's variables.

    Args:
        expression: the text inside ``eval(...)``.
        variables: a mapping of variable name to value, or a callable that returns a
            variable's value (raising KeyError for an unknown name), used for lazy
            resolution of variables that reference each other.

    Returns:
        The computed value (a number, bool, string or a variable's value).

    Raises:
        ExpressionError: the expression uses anything outside the allow-list, names an
            undefined variable, or fails (division by zero, overflow, ...).
    """
    text = expression.strip()
    if not text:
        raise ExpressionError(expression, "empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(text[:60] + "...", f"longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(text, f"not a valid expression ({type(exc).__name__})") from None
    lookup = variables if callable(variables) else _mapping_lookup(variables)
    try:
        return _Evaluator(text, lookup).visit(tree.body)
    except ExpressionError:
        raise
    except RecipeError:  # e.g. a referenced variable that itself failed: keep its message
        raise
    except ZeroDivisionError:
        raise ExpressionError(text, "division by zero") from None
    except OverflowError:
        raise ExpressionError(text, "numeric overflow") from None
    except RecursionError:
        raise ExpressionError(text, "nested too deeply") from None
    except (TypeError, ValueError) as exc:
        raise ExpressionError(text, f"cannot compute: {exc}") from None


def _mapping_lookup(mapping: Mapping[str, Any]) -> Callable[[str], Any]:
    def lookup(name: str) -> Any:
        return mapping[name]

    return lookup


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))  # bool is an int: True + 1 == 2, as in Python


class _Evaluator:
    """Walks an expression tree, accepting only allow-listed node types."""

    def __init__(self, text: str, lookup: Callable[[str], Any]):
        self.text = text
        self.lookup = lookup

    def fail(self, reason: str) -> ExpressionError:
        return ExpressionError(self.text, reason)

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise self.fail(f"{_describe(node)} is not allowed in recipe expressions")
        return method(node)

    def visit_Constant(self, node: ast.Constant) -> Any:
        value = node.value
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            if len(value) > MAX_STRING_CHARS:
                raise self.fail(f"string literals longer than {MAX_STRING_CHARS} characters")
            return value
        raise self.fail(f"{type(value).__name__} literals are not allowed")

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id.startswith("_"):
            raise self.fail(f"name '{node.id}' is not allowed")
        try:
            return self.lookup(node.id)
        except KeyError:
            raise self.fail(f"undefined variable '{node.id}'") from None

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return not operand
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            self._need_numbers(operand)
            return -operand if isinstance(node.op, ast.USub) else +operand
        raise self.fail(f"operator {type(node.op).__name__} is not allowed")

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise self.fail(f"operator {type(node.op).__name__} is not allowed")
        left = self.visit(node.left)
        right = self.visit(node.right)
        self._need_numbers(left, right)
        if isinstance(node.op, ast.Pow):
            self._check_power(left, right)
        result = op(left, right)
        if isinstance(result, complex):
            raise self.fail("result is a complex number")
        if isinstance(result, int) and result.bit_length() > MAX_INT_BITS:
            raise self.fail(f"integer result larger than {MAX_INT_BITS} bits")
        return result

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        is_and = isinstance(node.op, ast.And)
        value: Any = None
        for sub in node.values:  # short-circuits like Python
            value = self.visit(sub)
            if bool(value) != is_and:
                return value
        return value

    def visit_Compare(self, node: ast.Compare) -> Any:
        left = self.visit(node.left)
        for op_node, right_node in zip(node.ops, node.comparators, strict=True):
            op = _CMPOPS.get(type(op_node))
            if op is None:
                raise self.fail(f"comparison {type(op_node).__name__} is not allowed")
            right = self.visit(right_node)
            if not op(left, right):
                return False
            left = right
        return True

    def visit_IfExp(self, node: ast.IfExp) -> Any:
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def visit_Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
            raise self.fail(
                f"call to {_describe(node.func)} is not allowed (only {', '.join(_FUNCS)})"
            )
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(f"{node.func.id}() takes plain positional arguments only")
        args = [self.visit(a) for a in node.args]
        if len(args) == 1 and isinstance(args[0], (list, tuple)) and node.func.id in ("min", "max"):
            self._need_numbers(*args[0])
        else:
            self._need_numbers(*args)
        return _FUNCS[node.func.id](*args)

    def _need_numbers(self, *values: Any) -> None:
        for v in values:
            if not _is_number(v):
                raise self.fail(f"arithmetic needs numbers, got {v!r}")

    def _check_power(self, base: Any, exponent: Any) -> None:
        if abs(exponent) > MAX_EXPONENT:
            raise self.fail(f"exponent {exponent} larger than {MAX_EXPONENT}")
        if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
            if math.log2(abs(base)) * exponent > MAX_INT_BITS:
                raise self.fail(f"integer result larger than {MAX_INT_BITS} bits")


def _describe(node: ast.AST) -> str:
    names = {
        "Attribute": "attribute access",
        "Subscript": "subscripts",
        "Lambda": "lambda",
        "ListComp": "comprehensions",
        "SetComp": "comprehensions",
        "DictComp": "comprehensions",
        "GeneratorExp": "generator expressions",
        "JoinedStr": "f-strings",
        "NamedExpr": "assignment expressions",
        "Await": "await",
        "Yield": "yield",
        "Starred": "starred arguments",
        "List": "list literals",
        "Tuple": "tuple literals",
        "Dict": "dict literals",
        "Set": "set literals",
        "Slice": "slices",
    }
    kind = type(node).__name__
    if kind == "Name":
        return f"'{node.id}'"  # type: ignore[attr-defined]
    return names.get(kind, kind)
