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


# --- bounds: every allowed call and operator is checked before it computes -----------------

HOSTILE = [
    "round(1, -10**300)",  # hung `recipe check` for minutes
    "round(1, -10**7)",  # took 12 s
    "round(1.5, 10**7)",
    "round(2**1000, -(2**1000))",
    "9**9**9",
    "(2**1000) * (2**1000)",
    "big * big * big",
    "big ** 2",
    "2 ** 1025",
    "big + big",
    "-big - big",
    "big / 3 ** 700",
    "1e308 * 10",
    "10.0 ** 400",
    "min(long_list)",
    "max(long_list)",
    "long_list == long_list",
    "-" * 300 + "1",
    "not " * 200 + "1",
]


def test_hostile_expressions_fail_fast_with_a_named_error():
    """Run in a child process with a timeout: before the bounds, the first one never ended."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import time
        from sparse_transfer.recipe import ExpressionError, evaluate
        variables = {{"big": 2**1023, "long_list": list(range(10**5))}}
        for text in {HOSTILE!r}:
            start = time.perf_counter()
            try:
                evaluate(text, variables)
                print("NO ERROR", text)
            except ExpressionError as exc:
                print(f"{{time.perf_counter() - start:.4f}}", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(HOSTILE), done.stdout
    for text, line in zip(HOSTILE, lines, strict=True):
        seconds, message = line.split(" ", 1)
        assert seconds != "NO" and float(seconds) < 0.05, (text, line)
        assert message.startswith("expression '"), line


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("round(1, -10**300)", "round() keeps at most 400 digits either way, got an integer"),
        ("round(1, -401)", "round() keeps at most 400 digits either way, got -401"),
        ("round(1, 0.5)", "round() needs a whole number of digits, got 0.5"),
        ("round(1, 2, 3)", "round() takes 1 to 2 arguments, got 3"),
        ("abs()", "abs() takes 1 argument, got 0"),
        ("min()", "min() takes 1 to 1000 arguments, got 0"),
        ("min(long_list)", "min() of a list needs 1 to 1000 numbers"),
        ("max(empty)", "max() of a list needs 1 to 1000 numbers"),
        ("long_list == long_list", "comparisons need numbers, strings, booleans or None, got list"),
        ("big * big", "integer result larger than 1024 bits"),
        ("too_big + 0", "integer operand larger than 1024 bits"),
        ("1e308 * 10", "result is inf (only finite numbers are allowed)"),
        ("1e309", "result is inf"),
        ("-1e309", "result is inf"),
        ("1e308 + 1e308 - 1e308", "result is inf"),
        ("nan", "result is nan"),
        ("nan + 1", "operand is nan"),
        ("-" * 150 + "1", "operations nested more than 100 deep"),
    ],
)
def test_bounds_are_named(expression, reason):
    variables = {
        **VARS,
        "long_list": list(range(1001)),
        "empty": [],
        "big": 2**1000,
        "too_big": 2**1024,
        "nan": float("nan"),
    }
    with pytest.raises(ExpressionError) as info:
        evaluate(expression, variables)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("round(123456, -400)", 0),
        ("round(1.23456, 400)", 1.23456),
        ("round(2 ** 1000, -3) % 1000", 0),
        ("2 ** 1023 + (2 ** 1023 - 1)", 2**1024 - 1),
        ("(2 ** 512) * (2 ** 511)", 2**1023),
        ("min(xs)", 1),
        ("max(xs)", 3.5),
        ("1e308 * 1.5", 1.5e308),
        ("1 / 2 ** 1000", 2.0**-1000),
        ("10 ** -400", 0.0),
    ],
)
def test_values_inside_the_bounds_still_compute(expression, expected):
    assert evaluate(expression, {"xs": [2, 1, 3.5]}) == expected


def test_one_budget_bounds_a_whole_recipe():
    """700 variables of 300 operations each: more than one recipe may spend."""
    from sparse_transfer.recipe import load_recipe

    body = "eval(min(" + ", ".join(["1"] * 300) + "))"
    text = "".join(f"v{i}: {body}\n" for i in range(700))
    start = time.perf_counter()
    with pytest.raises(RecipeError, match="more than 200000 operations"):
        load_recipe(text)
    assert time.perf_counter() - start < 10
    load_recipe("".join(f"v{i}: {body}\n" for i in range(600)))  # 180k operations: fine


def test_variables_nested_through_each_other_are_bounded():
    """A chain of 300 variables, each using the previous one: a named error, no RecursionError."""
    from sparse_transfer.recipe import load_recipe

    def chain(length: int) -> str:  # the last variable first, so resolving it walks the chain
        return "".join(f"v{i}: eval(v{i - 1} + 1)\n" for i in range(length - 1, 0, -1)) + "v0: 1\n"

    with pytest.raises(RecipeError, match="nested more than 100 deep"):
        load_recipe(chain(300))
    assert load_recipe(chain(30)).variables["v29"] == 30
