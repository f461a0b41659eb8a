"""The recipe expression evaluator: what eval(...) may compute, and what it must refuse."""

from __future__ import annotations

import time

import pytest
from sparse_transfer.errors import RecipeError
from sparse_transfer.recipe import ExpressionError, evaluate

VARS = {"num_epochs": 13, "qat_start_epoch": 8.0, "lr": 1.5e-4, "zero": 0, "func": "linear"}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("num_epochs - 5", 8),
        ("num_epochs / 2", 6.5),
        ("num_epochs // 2", 6),
        ("num_epochs % 5", 3),
        ("2 ** 10", 1024),
        ("-num_epochs", -13),
        ("+lr", 1.5e-4),
        ("lr * 10", 1.5e-3),
        ("num_epochs > qat_start_epoch", True),
        ("1 < 2 < 3", True),
        ("3 > 2 > 2", False),
        ("num_epochs == 13 and zero", 0),
        ("zero or 5", 5),
        ("not zero", True),
        ("1 if num_epochs > 10 else 2", 1),
        ("min(num_epochs, 4)", 4),
        ("max(1, 2.5, 2)", 2.5),
        ("abs(-3)", 3),
        ("round(2.567, 2)", 2.57),
        ("round(num_epochs * 0.6)", 8),
        ("func", "linear"),
        ("func == 'linear'", True),
        ("True", True),
        ("1e-5", 1e-5),
    ],
)
def test_allowed_expressions(expression, expected):
    assert evaluate(expression, VARS) == pytest.approx(expected)


def test_exact_float_arithmetic_is_python_arithmetic():
    assert evaluate("qat_start_epoch / num_epochs", VARS) == 8.0 / 13


def test_lazy_lookup_callable():
    seen = []

    def lookup(name):
        seen.append(name)
        if name == "a":
            return 4
        raise KeyError(name)

    assert evaluate("a * a", lookup) == 16
    assert seen == ["a", "a"]


def test_undefined_variable_names_it():
    with pytest.raises(ExpressionError, match=r"expression 'nope \+ 1': undefined variable 'nope'"):
        evaluate("nope + 1", VARS)


@pytest.mark.parametrize("expression", ["1 / zero", "num_epochs // 0", "3 % zero"])
def test_division_by_zero(expression):
    with pytest.raises(ExpressionError, match="division by zero") as info:
        evaluate(expression, VARS)
    assert expression in str(info.value)


def _malicious(marker):
    return [
        f'__import__("os").system("touch {marker}")',
        f'open("{marker}", "w")',
        f'eval(\'__import__("os").system("touch {marker}")\')',
        f"exec(\"open('{marker}', 'w')\")",
        f'getattr(__builtins__, "open")("{marker}", "w")',
        f'[__import__("os").system("touch {marker}") for _ in (1,)]',
        f'(lambda: __import__("os").system("touch {marker}"))()',
        f'max(__import__("os").system("touch {marker}"), 1)',
        f'1 if __import__("os").system("touch {marker}") else 2',
    ]


def test_malicious_expressions_are_rejected_and_create_nothing(tmp_path):
    marker = tmp_path / "x"
    for expression in _malicious(marker):
        with pytest.raises(ExpressionError) as info:
            evaluate(expression, VARS)
        # The message names the expression (so users can find it in the recipe).
        assert expression.strip()[:30] in str(info.value)
        assert not marker.exists(), expression
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("num_epochs.real", "attribute access"),
        ("().__class__", "attribute access"),
        ("().__class__.__bases__[0].__subclasses__()", "not allowed"),
        ("func.upper()", "call to attribute access"),
        ("lambda: 1", "lambda"),
        ("[x for x in (1, 2)]", "comprehensions"),
        ("{x: 1 for x in (1, 2)}", "comprehensions"),
        ("sum(x for x in (1, 2))", "not allowed"),
        ("(1, 2)[0]", "subscripts"),
        ("[1, 2]", "list literals"),
        ("f'{num_epochs}'", "f-strings"),
        ("b'abc'", "bytes literals"),
        ("(y := 3)", "assignment expressions"),
        ("__import__", "name '__import__' is not allowed"),
        ("_private", "not allowed"),
        ("len(func)", "call to 'len' is not allowed"),
        ("min(*[1, 2])", "positional arguments only"),
        ("round(1.5, ndigits=1)", "positional arguments only"),
        ("'a' * 10", "arithmetic needs numbers"),
        ("func + func", "arithmetic needs numbers"),
        ("'" + "a" * 100 + "'", "string literals longer than"),
        ("1 << 3", "operator LShift is not allowed"),
        ("1 & 3", "operator BitAnd is not allowed"),
        ("1 in (1,)", "not allowed"),
        ("1 is 1", "comparison Is is not allowed"),
        ("1 +", "not a valid expression"),
        ("", "empty expression"),
        ("(-8) ** 0.5", "complex"),
    ],
)
def test_rejected_expressions(expression, reason):
    with pytest.raises(ExpressionError) as info:
        evaluate(expression, VARS)
    assert reason in str(info.value)
    assert isinstance(info.value, RecipeError)


@pytest.mark.parametrize(
    "expression",
    ["9**9**9", "2 ** 100000", "10 ** 400", "(10 ** 200) ** 6", "(2**1000) * (2**1000)"],
)
def test_huge_numbers_fail_fast(expression):
    start = time.perf_counter()
    with pytest.raises(ExpressionError, match="larger than"):
        evaluate(expression, VARS)
    assert time.perf_counter() - start < 0.5


def test_float_overflow_is_an_error():
    with pytest.raises(ExpressionError, match="overflow"):
        evaluate("10.0 ** 400", VARS)


def test_long_and_deeply_nested_expressions_are_rejected():
    with pytest.raises(ExpressionError, match="longer than"):
        evaluate("1+" * 600 + "1", VARS)
    with pytest.raises(ExpressionError):
        evaluate("(" * 400 + "1" + ")" * 400, VARS)
