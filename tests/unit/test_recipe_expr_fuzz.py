"""Fuzzing the recipe expression evaluator: every expression ends fast, in a value or a named error.

Expressions are generated as `ast` trees over exactly the evaluator's allow-list
(`BINOPS`, `UNARYOPS`, `BOOLOPS`, `CMPOPS`, `FUNCS`), so a new operator or function
is fuzzed the moment it is allowed. Leaves include the values that used to hang or
blow up (``round(1, -10**300)``, ``9**9**9``, ``1e308 * 10``) and variables at and
beyond the bounds. Each evaluation must take under `BUDGET_S` of CPU time (thread
time, so a loaded CI machine does not make it flaky) and either raise
`ExpressionError` or return a finite number, a bool, None, a string or a variable's
own value. Derandomized with a fixed number of examples: CI runs the same cases
every time, in a few seconds.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import math
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparse_transfer.recipe import ExpressionError, _expr, evaluate

BUDGET_S = 0.05
LIST = [1, 2.5, -3]
VARIABLES = {
    "n": 13,
    "lr": 1.5e-4,
    "zero": 0,
    "func": "linear",
    "flag": True,
    "nothing": None,
    "xs": LIST,
    "long_list": list(range(_expr.MAX_ITEMS + 5)),
    "big": 2**_expr.MAX_INT_BITS - 1,  # the largest integer operand allowed
    "too_big": 2**_expr.MAX_INT_BITS,  # one bit over (a recipe YAML can hold it)
    "huge_float": 1.7e308,
    "tiny_float": 5e-324,
    "nan": float("nan"),  # a lookup may hand out anything; the evaluator must refuse it
    "inf": float("inf"),
}
EDGE_NUMBERS = [
    0,
    1,
    -1,
    2,
    10,
    _expr.MAX_NDIGITS,
    _expr.MAX_NDIGITS + 1,
    _expr.MAX_EXPONENT,
    _expr.MAX_EXPONENT + 1,
    10**7,
    -(10**7),
    10**300,
    -(10**300),
    0.5,
    -0.5,
    1e-308,
    1e308,
    -1e308,
]

constants = st.one_of(
    st.sampled_from(EDGE_NUMBERS),
    st.integers(min_value=-(2**1100), max_value=2**1100),
    st.floats(allow_nan=False),  # infinity included: it unparses as the literal 1e309
    st.booleans(),
    st.none(),
    st.text(alphabet="ab'\"", max_size=_expr.MAX_STRING_CHARS + 4),
).map(lambda value: ast.Constant(value=value))
names = st.sampled_from([*VARIABLES, "undefined_name"]).map(
    lambda name: ast.Name(id=name, ctx=ast.Load())
)


def _composite(children: st.SearchStrategy[ast.expr]) -> st.SearchStrategy[ast.expr]:
    binop = st.builds(
        lambda left, op, right: ast.BinOp(left=left, op=op(), right=right),
        children,
        st.sampled_from(list(_expr.BINOPS)),
        children,
    )
    unary = st.builds(
        lambda op, operand: ast.UnaryOp(op=op(), operand=operand),
        st.sampled_from(_expr.UNARYOPS),
        children,
    )
    boolop = st.builds(
        lambda op, values: ast.BoolOp(op=op(), values=values),
        st.sampled_from(_expr.BOOLOPS),
        st.lists(children, min_size=2, max_size=3),
    )
    compare = st.builds(
        lambda left, pairs: ast.Compare(
            left=left, ops=[op() for op, _ in pairs], comparators=[c for _, c in pairs]
        ),
        children,
        st.lists(st.tuples(st.sampled_from(list(_expr.CMPOPS)), children), min_size=1, max_size=2),
    )
    ifexp = st.builds(
        lambda test, body, orelse: ast.IfExp(test=test, body=body, orelse=orelse),
        children,
        children,
        children,
    )
    call = st.builds(
        lambda name, args: ast.Call(func=ast.Name(id=name, ctx=ast.Load()), args=args, keywords=[]),
        st.sampled_from(list(_expr.FUNCS)),
        st.lists(children, min_size=0, max_size=3),
    )
    return st.one_of(binop, unary, boolop, compare, ifexp, call)


expressions = st.recursive(st.one_of(constants, names), _composite, max_leaves=24).map(ast.unparse)


@contextlib.contextmanager
def _cpu_budget(text: str):
    """Asserts the block used under BUDGET_S of this thread's CPU time.

    The garbage collector is paused meanwhile: a full collection of what the test
    framework piled up is not the evaluator's cost.
    """
    gc.disable()
    start = time.thread_time()
    try:
        yield
    finally:
        elapsed = time.thread_time() - start
        gc.enable()
    assert elapsed < BUDGET_S, f"{text!r} took {elapsed * 1000:.1f} ms CPU"


def _allowed_result(value) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return value.bit_length() <= _expr.MAX_INT_BITS
    if isinstance(value, float):
        return math.isfinite(value)
    return any(value is v for v in VARIABLES.values())  # a variable returned as is


@settings(
    max_examples=1000,
    derandomize=True,  # the same examples on every run: reproducible CI
    deadline=None,  # wall time flakes on a shared machine; CPU time is asserted below
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(expressions)
def test_every_expression_ends_fast_in_a_value_or_a_named_error(text):
    error = None
    with _cpu_budget(text):
        try:
            value = evaluate(text, VARIABLES)
        except ExpressionError as exc:
            error = exc
    if error is not None:
        assert str(error).startswith("expression '") and "\n" not in str(error), error
    else:
        assert _allowed_result(value), (text, value)


def test_the_fuzzer_covers_the_whole_allow_list():
    """Each allowed node kind appears in what the generator draws (sanity of the generator)."""
    seen: set[str] = set()
    kinds = {op.__name__ for op in (*_expr.BINOPS, *_expr.UNARYOPS, *_expr.BOOLOPS, *_expr.CMPOPS)}

    @settings(max_examples=400, derandomize=True, deadline=None, database=None)
    @given(expressions)
    def collect(text):
        for node in ast.walk(ast.parse(text, mode="eval")):
            seen.add(type(node).__name__)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                seen.add(node.func.id)

    collect()
    assert kinds | set(_expr.FUNCS) <= seen, sorted(kinds | set(_expr.FUNCS) - seen)


LEAVES = [repr(v) for v in EDGE_NUMBERS] + ["1e309", "'a'", "None", "True", *VARIABLES]


def _bounded(text: str) -> None:
    value = failed = None
    with _cpu_budget(text):
        try:
            value = evaluate(text, VARIABLES)
        except ExpressionError:
            failed = True
    assert failed or _allowed_result(value), (text, value)


def test_every_allowed_operation_on_every_pair_of_edge_values_is_bounded():
    """Exhaustive where the fuzzer is random: each operator and function of the allow-list
    applied to every edge value (and pair of them), e.g. ``round(1, -(10**300))``."""
    leaves = [ast.parse(text, mode="eval").body for text in LEAVES]
    count = 0
    for left in leaves:
        for op in _expr.UNARYOPS:
            _bounded(ast.unparse(ast.UnaryOp(op=op(), operand=left)))
        for right in leaves:
            for op in _expr.BINOPS:
                _bounded(ast.unparse(ast.BinOp(left=left, op=op(), right=right)))
            for op in _expr.CMPOPS:
                _bounded(ast.unparse(ast.Compare(left=left, ops=[op()], comparators=[right])))
            for op in _expr.BOOLOPS:
                _bounded(ast.unparse(ast.BoolOp(op=op(), values=[left, right])))
            for name in _expr.FUNCS:
                func = ast.Name(id=name, ctx=ast.Load())
                for args in ([left], [left, right]):
                    _bounded(ast.unparse(ast.Call(func=func, args=args, keywords=[])))
            count += 1
    assert count == len(LEAVES) ** 2
