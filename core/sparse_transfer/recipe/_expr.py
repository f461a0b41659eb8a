"""Safe arithmetic for recipe ``eval(...)`` values: an allow-listed AST walk, never Python's eval.

SparseML recipes write computed values as ``eval(num_epochs - 2)``. We parse the
expression with `ast` and evaluate only what a schedule needs: numbers, short string
literals, + - * / // % **, unary +/-, comparisons, and/or/not, ``a if c else b``, recipe
variable names and calls to min/max/abs/round. Anything else (attribute access,
subscripts, other calls, lambdas, comprehensions, f-strings, ...) is rejected with a
`RecipeError` naming the expression.

Every operation is bounded in time and memory *before* it runs, so a hostile recipe
fails fast with an `ExpressionError` instead of hanging whoever loads it:

- operands: arithmetic takes numbers only (so ``"a" * 10**9`` cannot allocate), each
  integer at most `MAX_INT_BITS` bits, each float finite;
- ``*``: the operands' bit lengths must add up to at most `MAX_INT_BITS` + 1;
  ``**``: the exponent is at most `MAX_EXPONENT` and an integer result's size is
  estimated first (``9**9**9`` is refused without computing it);
- ``round(x, n)``: ``|n|`` at most `MAX_NDIGITS` (``round(1, -10**300)`` would otherwise
  spend minutes building ``10**(10**300)``);
- ``min``/``max`` of one list: at most `MAX_ITEMS` numbers; comparisons: numbers,
  strings, booleans or None only (no element-wise walks over long lists);
- every result: an integer of at most `MAX_INT_BITS` bits or a finite float (a NaN or
  infinite value never leaves the evaluator);
- the walk: at most `MAX_DEPTH` nested operations (also across variables that use
  other variables) and `MAX_STEPS` operations per `Budget` (one per recipe), so a
  recipe of many expressions is bounded as a whole.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from sparse_transfer.errors import RecipeError

#: Longest expression we parse (deeply nested input can exhaust the parser's stack).
MAX_EXPRESSION_CHARS = 1000
#: Longest string literal accepted (for comparisons such as ``lr_func == "linear"``).
MAX_STRING_CHARS = 64
#: Largest integer operand or result, in bits (10**300 fits; 9**9**9 does not).
MAX_INT_BITS = 1024
#: Largest absolute exponent for ``**``.
MAX_EXPONENT = 1024
#: Largest ``|ndigits|`` for ``round``: beyond 10**±400 rounding a bounded number changes nothing.
MAX_NDIGITS = 400
#: Most numbers ``min``/``max`` take from one list variable.
MAX_ITEMS = 1000
#: Deepest nesting of operations, counted across variables that reference variables.
MAX_DEPTH = 100
#: Most operations one `Budget` pays for (a recipe shares one across all its expressions).
MAX_STEPS = 200_000

#: The allow-list. The fuzzer in tests/unit/test_recipe_expr_fuzz.py builds its
#: expressions from these tables, so grammar and tests cannot drift apart.
BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
UNARYOPS: tuple[type, ...] = (ast.UAdd, ast.USub, ast.Not)
BOOLOPS: tuple[type, ...] = (ast.And, ast.Or)
CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
#: Function name -> (function, fewest arguments, most arguments).
FUNCS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "min": (min, 1, MAX_ITEMS),
    "max": (max, 1, MAX_ITEMS),
    "abs": (abs, 1, 1),
    "round": (round, 1, 2),
}


class ExpressionError(RecipeError):
    """An ``eval(...)`` expression that is not allowed or cannot be computed."""

    def __init__(self, expression: str, reason: str):
        shown = expression if len(expression) <= 120 else expression[:117] + "..."
        super().__init__(f"expression '{shown}': {reason}")
        self.expression = expression
        self.reason = reason


class Budget:
    """Operations left and the current nesting depth, shared by nested evaluations.

    A recipe's variables are resolved lazily from inside other expressions, so one
    budget per recipe bounds the whole recipe, not just each expression.
    """

    def __init__(self, steps: int = MAX_STEPS):
        self.steps = steps
        self.depth = 0


Lookup = Mapping[str, Any] | Callable[[str], Any]


def evaluate(expression: str, variables: Lookup, budget: Budget | None = None) -> Any:
    """Evaluates one recipe expression over the recipe's variables.

    Args:
        expression: the text inside ``eval(...)``.
        variables: a mapping of variable name to value, or a callable that returns a
            variable's value (raising KeyError for an unknown name), used for lazy
            resolution of variables that reference each other.
        budget: operations and depth left; pass one `Budget` for all expressions of a
            recipe (default: a fresh budget for this expression alone).

    Returns:
        The computed value (a number, bool, string or a variable's value); numbers are
        always finite.

    Raises:
        ExpressionError: the expression uses anything outside the allow-list, names an
            undefined variable, exceeds a bound, or fails (division by zero, ...).
    """
    text = expression.strip()
    if not text:
        raise ExpressionError(expression, "empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(text[:60] + "...", f"longer than {MAX_EXPRESSION_CHARS} characters")
    tree = _parse(text)
    lookup = variables if callable(variables) else _mapping_lookup(variables)
    evaluator = _Evaluator(text, lookup, budget or Budget())
    try:
        return evaluator.result(evaluator.visit(tree.body))
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


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> ast.Expression:
    """Parses once per distinct text (a recipe repeats the same few expressions)."""
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(text, f"not a valid expression ({type(exc).__name__})") from None


def _mapping_lookup(mapping: Mapping[str, Any]) -> Callable[[str], Any]:
    def lookup(name: str) -> Any:
        return mapping[name]

    return lookup


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))  # bool is an int: True + 1 == 2, as in Python


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str))


class _Evaluator:
    """Walks an expression tree, accepting only allow-listed node types."""

    def __init__(self, text: str, lookup: Callable[[str], Any], budget: Budget):
        self.text = text
        self.lookup = lookup
        self.budget = budget

    def fail(self, reason: str) -> ExpressionError:
        return ExpressionError(self.text, reason)

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise self.fail(f"{_describe(node)} is not allowed in recipe expressions")
        budget = self.budget
        budget.steps -= 1
        if budget.steps < 0:
            raise self.fail(f"more than {MAX_STEPS} operations in this recipe's expressions")
        if budget.depth >= MAX_DEPTH:
            raise self.fail(f"operations nested more than {MAX_DEPTH} deep")
        budget.depth += 1
        try:
            return method(node)
        finally:
            budget.depth -= 1

    def visit_Constant(self, node: ast.Constant) -> Any:
        value = node.value
        if value is None or isinstance(value, (bool, int, float)):
            return self.result(value)
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
        if not isinstance(node.op, UNARYOPS):
            raise self.fail(f"operator {type(node.op).__name__} is not allowed")
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return not operand
        self._need_numbers(operand)
        return self.result(-operand if isinstance(node.op, ast.USub) else +operand)

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        op = BINOPS.get(type(node.op))
        if op is None:
            raise self.fail(f"operator {type(node.op).__name__} is not allowed")
        left = self.visit(node.left)
        right = self.visit(node.right)
        self._need_numbers(left, right)
        if isinstance(node.op, ast.Pow):
            self._check_power(left, right)
        elif isinstance(node.op, ast.Mult):
            self._check_product(left, right)
        return self.result(op(left, right))

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        if not isinstance(node.op, BOOLOPS):
            raise self.fail(f"operator {type(node.op).__name__} is not allowed")
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
            op = CMPOPS.get(type(op_node))
            if op is None:
                raise self.fail(f"comparison {type(op_node).__name__} is not allowed")
            right = self.visit(right_node)
            for value in (left, right):
                if not _is_scalar(value):
                    raise self.fail(
                        f"comparisons need numbers, strings, booleans or None, got "
                        f"{type(value).__name__}"
                    )
            if not op(left, right):
                return False
            left = right
        return True

    def visit_IfExp(self, node: ast.IfExp) -> Any:
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def visit_Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCS:
            raise self.fail(
                f"call to {_describe(node.func)} is not allowed (only {', '.join(FUNCS)})"
            )
        name = node.func.id
        function, fewest, most = FUNCS[name]
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(f"{name}() takes plain positional arguments only")
        if not fewest <= len(node.args) <= most:
            count = f"{fewest} argument" if fewest == most == 1 else f"{fewest} to {most} arguments"
            raise self.fail(f"{name}() takes {count}, got {len(node.args)}")
        args = [self.visit(a) for a in node.args]
        if len(args) == 1 and isinstance(args[0], (list, tuple)) and name in ("min", "max"):
            if not args[0] or len(args[0]) > MAX_ITEMS:
                raise self.fail(f"{name}() of a list needs 1 to {MAX_ITEMS} numbers")
            self._need_numbers(*args[0])
        else:
            self._need_numbers(*args)
        if name == "round" and len(args) == 2:
            self._check_ndigits(args[1])
        return self.result(function(*args))

    def result(self, value: Any) -> Any:
        """Refuses what no operation may produce: complex, oversized int, NaN/infinity."""
        if isinstance(value, complex):
            raise self.fail("result is a complex number")
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise self.fail(f"integer result larger than {MAX_INT_BITS} bits")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(f"result is {value} (only finite numbers are allowed)")
        return value

    def _need_numbers(self, *values: Any) -> None:
        for v in values:
            if not _is_number(v):
                raise self.fail(f"arithmetic needs numbers, got {_short(v)}")
            if isinstance(v, int) and v.bit_length() > MAX_INT_BITS:
                raise self.fail(f"integer operand larger than {MAX_INT_BITS} bits")
            if isinstance(v, float) and not math.isfinite(v):
                raise self.fail(f"operand is {v} (only finite numbers are allowed)")

    def _check_product(self, left: Any, right: Any) -> None:
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
                raise self.fail(f"integer result larger than {MAX_INT_BITS} bits")

    def _check_power(self, base: Any, exponent: Any) -> None:
        if abs(exponent) > MAX_EXPONENT:
            raise self.fail(f"exponent {exponent} larger than {MAX_EXPONENT}")
        if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
            if math.log2(abs(base)) * exponent > MAX_INT_BITS:
                raise self.fail(f"integer result larger than {MAX_INT_BITS} bits")

    def _check_ndigits(self, ndigits: Any) -> None:
        if not isinstance(ndigits, int):
            raise self.fail(f"round() needs a whole number of digits, got {_short(ndigits)}")
        if abs(ndigits) > MAX_NDIGITS:
            raise self.fail(
                f"round() keeps at most {MAX_NDIGITS} digits either way, got {_short(ndigits)}"
            )


def _short(value: Any) -> str:
    """A value for a message, never longer than a line (and never a huge int's digits)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
