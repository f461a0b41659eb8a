"""Recipe loading: the reference recipes, recipe args, stages, Markdown, errors and safety."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sparse_transfer.errors import RecipeError
from sparse_transfer.modifiers import (
    ConstantPruningModifier,
    DistillationModifier,
    EpochRangeModifier,
    LearningRateFunctionModifier,
    SetWeightDecayModifier,
    known_modifiers,
)
from sparse_transfer.recipe import (
    Recipe,
    RecipeProblems,
    builtin_recipe_path,
    builtin_recipes,
    load_recipe,
)

REPO = Path(__file__).resolve().parents[2]
SHORT = {"num_epochs": 1, "qat_start_epoch": 0.5, "observer_epoch": 0.9}


def _write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def _problems(excinfo) -> list[str]:
    return getattr(excinfo.value, "problems", [str(excinfo.value)])


# --- the reference recipes -------------------------------------------------------------------


def test_builtin_recipes_are_the_reference_verbatim():
    """The built-in recipes are the reference document's YAML blocks, byte for byte.

    The blocks live in the repository as test data (tests/data/reference_recipes/, copied
    from the reference document; its README says which block is which)."""
    reference = REPO / "tests/data/reference_recipes"
    for name in ("sst2_pruned90_quant", "dense_teacher"):
        assert builtin_recipe_path(name).read_text() == (reference / f"{name}.yaml").read_text()
    # plus the frontier pipeline's two (issue 25), which are ours, not the reference's
    assert builtin_recipes() == [
        "dense_teacher", "frontier_block4_quant", "frontier_unstructured_quant", "sst2_pruned90_quant",
    ]  # fmt: skip


def test_sst2_recipe_resolves_to_exact_numbers():
    recipe = load_recipe(builtin_recipe_path("sst2_pruned90_quant"))
    assert recipe.version == "1.1.0"
    assert [m.recipe_name for m in recipe.modifiers] == [
        "EpochRangeModifier",
        "LearningRateFunctionModifier",
        "QuantizationModifier",
        "DistillationModifier",
        "ConstantPruningModifier",
        "SetWeightDecayModifier",
    ]
    (epochs,) = recipe.find(EpochRangeModifier)
    assert (epochs.start_epoch, epochs.end_epoch) == (0.0, 13.0)
    (lr,) = recipe.find("LearningRateFunctionModifier")
    assert (lr.lr_func, lr.init_lr, lr.final_lr) == ("linear", 1.5e-4, 0.0)
    assert (lr.start_epoch, lr.end_epoch) == (0.0, 13.0)
    (quant,) = recipe.find("QuantizationModifier")
    assert quant.start_epoch == 8.0 and isinstance(quant.start_epoch, float)
    assert quant.disable_quantization_observer_epoch == 12.0
    assert quant.freeze_bn_stats_epoch == 12.0
    assert quant.quantize_embeddings is True
    assert quant.quantize_linear_activations is False
    assert list(quant.exclude_module_types) == ["LayerNorm", "Tanh"]
    assert list(quant.submodules) == [
        "bert.embeddings",
        "bert.encoder",
        "bert.pooler",
        "classifier",
    ]
    (distill,) = recipe.find(DistillationModifier)
    assert (distill.hardness, distill.temperature) == (1.0, 2.0)
    assert list(distill.distill_output_keys) == ["logits"]
    (constant,) = recipe.find(ConstantPruningModifier)
    assert constant.params == "__ALL_PRUNABLE__" and constant.start_epoch == 0.0
    (wd,) = recipe.find(SetWeightDecayModifier)
    assert (wd.weight_decay, wd.start_epoch) == (0.01, 0.0)
    assert recipe.variables == {
        "num_epochs": 13,
        "init_lr": 1.5e-4,
        "final_lr": 0,
        "qat_start_epoch": 8.0,
        "observer_epoch": 12.0,
        "quantize_embeddings": 1,
        "distill_hardness": 1.0,
        "distill_temperature": 2.0,
        "weight_decay": 0.01,
    }


def test_dense_teacher_recipe_with_its_odd_indentation():
    recipe = load_recipe(str(builtin_recipe_path("dense_teacher")))
    epochs, lr = recipe.modifiers
    assert isinstance(epochs, EpochRangeModifier) and epochs.end_epoch == 2.0
    assert isinstance(lr, LearningRateFunctionModifier)
    # `init_lr: 2e-5` is a number (YAML 1.2), not the string "2e-5".
    assert (lr.init_lr, lr.final_lr, lr.end_epoch, lr.lr_func) == (2e-5, 0.0, 2.0, "linear")
    assert recipe.variables == {"num_epochs": 2, "init_lr": 2e-5, "final_lr": 0}


# --- recipe args -------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [SHORT, json.dumps(SHORT)])
def test_recipe_args_shorten_the_run(args):
    recipe = load_recipe(builtin_recipe_path("sst2_pruned90_quant"), args)
    assert recipe.find(EpochRangeModifier)[0].end_epoch == 1.0
    lr = recipe.find(LearningRateFunctionModifier)[0]
    assert (lr.end_epoch, lr.init_lr) == (1.0, 1.5e-4)
    quant = recipe.find("QuantizationModifier")[0]
    assert quant.start_epoch == 0.5
    assert quant.disable_quantization_observer_epoch == 0.9
    assert quant.freeze_bn_stats_epoch == 0.9
    assert recipe.variables["num_epochs"] == 1


def test_recipe_args_on_a_loaded_recipe_reparse_it():
    base = load_recipe(builtin_recipe_path("dense_teacher"))
    short = load_recipe(base, {"num_epochs": 1})
    assert short.modifiers[0].end_epoch == 1.0 and base.modifiers[0].end_epoch == 2.0
    assert load_recipe(base) is base
    assert load_recipe(None) is None


def test_unknown_recipe_arg_is_an_error_listing_known_variables():
    with pytest.raises(RecipeError) as info:
        load_recipe(builtin_recipe_path("sst2_pruned90_quant"), {"num_epoch": 1})
    message = str(info.value)
    assert "'num_epoch' is not a variable" in message
    assert "did you mean 'num_epochs'" in message
    assert "qat_start_epoch" in message and "weight_decay" in message


def test_recipe_args_never_touch_modifier_fields():
    # `lr_func` and `start_epoch` are modifier fields, not variables: refused, not ignored.
    for args in ({"lr_func": "cosine"}, {"start_epoch": 3}):
        with pytest.raises(RecipeError, match="not a variable"):
            load_recipe(builtin_recipe_path("sst2_pruned90_quant"), args)


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", "3"])
def test_bad_recipe_args(bad):
    with pytest.raises(RecipeError, match="recipe_args"):
        load_recipe(builtin_recipe_path("dense_teacher"), bad)


def test_override_reaches_aliases_of_the_variable_anchor():
    text = """
    num_epochs: &num_epochs 13
    half: eval(num_epochs / 2)
    copy: *num_epochs
    modifiers:
      - !EpochRangeModifier
          end_epoch: *num_epochs
      - !SetWeightDecayModifier
          weight_decay: 0.0
          start_epoch: *num_epochs
    """
    recipe = load_recipe(textwrap.dedent(text))
    assert recipe.modifiers[0].end_epoch == 13.0 and recipe.variables["half"] == 6.5
    recipe = load_recipe(textwrap.dedent(text), {"num_epochs": 4})
    assert recipe.modifiers[0].end_epoch == 4.0
    assert recipe.modifiers[1].start_epoch == 4.0
    assert recipe.variables == {"num_epochs": 4, "half": 2.0, "copy": 4}


def test_override_value_may_itself_be_an_expression():
    recipe = load_recipe(builtin_recipe_path("dense_teacher"), {"init_lr": "eval(1e-5 * 3)"})
    assert recipe.modifiers[1].init_lr == pytest.approx(3e-5)


# --- layout features ------------------------------------------------------------------------------


def test_variables_may_use_each_other_in_any_order():
    recipe = load_recipe(
        "end: eval(start + length)\nstart: 2\nlength: eval(start * 3)\n"
        "modifiers:\n  - !EpochRangeModifier\n      start_epoch: eval(start)\n      end_epoch: eval(end)\n"
    )
    assert recipe.variables == {"end": 8, "start": 2, "length": 6}
    assert (recipe.modifiers[0].start_epoch, recipe.modifiers[0].end_epoch) == (2.0, 8.0)


def test_variable_cycle_is_reported():
    with pytest.raises(RecipeError, match=r"cycle: a -> b -> a"):
        load_recipe("a: eval(b)\nb: eval(a)\n")


def test_staged_recipe_stage_variables_override_globals():
    text = """
    version: 1.1.0
    num_epochs: 10
    lr: 1e-3
    stage_a:
      num_epochs: 3
      training_modifiers:
        - !EpochRangeModifier
            end_epoch: eval(num_epochs)
        - !SetLearningRateModifier
            learning_rate: eval(lr)
    stage_b:
      lr: 1e-4
      extra: eval(num_epochs + 1)
      training_modifiers:
        - !SetLearningRateModifier
            learning_rate: eval(lr)
            start_epoch: eval(num_epochs)
    """
    recipe = load_recipe(textwrap.dedent(text))
    a_epochs, a_lr, b_lr = recipe.modifiers
    assert a_epochs.end_epoch == 3.0 and a_lr.learning_rate == 1e-3
    assert (b_lr.learning_rate, b_lr.start_epoch) == (1e-4, 10.0)
    assert recipe.variables["stage_a.num_epochs"] == 3
    assert recipe.variables["stage_b.extra"] == 11
    # A plain name overrides the global and every stage defining it; stage.name one stage.
    recipe = load_recipe(textwrap.dedent(text), {"num_epochs": 1})
    assert recipe.modifiers[0].end_epoch == 1.0 and recipe.modifiers[2].start_epoch == 1.0
    recipe = load_recipe(textwrap.dedent(text), {"stage_a.num_epochs": 2})
    assert recipe.modifiers[0].end_epoch == 2.0 and recipe.modifiers[2].start_epoch == 10.0
    with pytest.raises(RecipeError, match="stage_a.num_epochs"):
        load_recipe(textwrap.dedent(text), {"stage_a.nope": 2})


def test_stage_variable_may_refer_to_the_global_of_the_same_name():
    recipe = load_recipe(
        "n: 2\ns:\n  n: eval(n + 1)\n  modifiers:\n    - !EpochRangeModifier\n        end_epoch: eval(n)\n"
    )
    assert recipe.modifiers[0].end_epoch == 3.0


def test_markdown_front_matter(tmp_path):
    path = _write(
        tmp_path,
        """
        ---
        version: 1.1.0
        num_epochs: 3
        modifiers:
          - !EpochRangeModifier
              end_epoch: eval(num_epochs)
        ---

        # My recipe

        Some prose about it, with a --- rule below.

        ---
        """,
        "recipe.md",
    )
    recipe = load_recipe(path, {"num_epochs": 5})
    assert recipe.modifiers[0].end_epoch == 5.0 and recipe.source_path == str(path)
    # Line numbers in errors are the Markdown file's lines.
    path.write_text(path.read_text().replace("end_epoch: eval(num_epochs)", "end_epoch: -3"))
    with pytest.raises(RecipeError, match=r"recipe\.md:6: EpochRangeModifier \(modifiers\[0\]\)"):
        load_recipe(path)


def test_markdown_without_front_matter(tmp_path):
    with pytest.raises(RecipeError, match="no YAML front matter"):
        load_recipe(_write(tmp_path, "# just prose\n", "recipe.md"))


def test_yaml_string_with_front_matter_fences():
    recipe = load_recipe("---\nmodifiers:\n  - !EpochRangeModifier\n      end_epoch: 2\n---\n")
    assert recipe.modifiers[0].end_epoch == 2.0 and recipe.source_path is None


def test_merge_keys_mapping_form_and_empty_modifier():
    text = """
    defaults: &defaults
      start_epoch: 0.0
    modifiers:
      - !SetWeightDecayModifier
          <<: *defaults
          weight_decay: 0.1
      - ConstantPruningModifier:
          params: ["re:.*weight"]
      - !EpochRangeModifier
    """
    recipe = load_recipe(textwrap.dedent(text))
    wd, constant, epochs = recipe.modifiers
    assert (wd.weight_decay, wd.start_epoch) == (0.1, 0.0)
    assert list(constant.params) == ["re:.*weight"]
    assert epochs.end_epoch == -1.0


def test_empty_recipe_and_recipe_without_modifiers():
    assert load_recipe("version: 1.0\n").modifiers == []
    empty = load_recipe("# nothing\n")
    assert empty.modifiers == [] and empty.variables == {}


def test_to_yaml_reloads_to_the_same_modifiers(tmp_path):
    recipe = load_recipe(builtin_recipe_path("sst2_pruned90_quant"), SHORT)
    saved = recipe.save(tmp_path / "out" / "recipe.yaml")
    assert [p.name for p in saved.parent.iterdir()] == ["recipe.yaml"]  # no temp file left
    reloaded = load_recipe(saved)
    assert reloaded.to_dict() == recipe.to_dict()
    assert reloaded.modifiers == recipe.modifiers
    assert "eval(" not in saved.read_text()
    assert json.loads(json.dumps(recipe.to_dict())) == recipe.to_dict()


def test_recipe_is_a_dataclass_with_the_contract_fields():
    recipe = load_recipe(builtin_recipe_path("dense_teacher"))
    assert isinstance(recipe, Recipe)
    data = recipe.to_dict()
    assert set(data) == {"version", "variables", "modifiers"}
    assert data["modifiers"][0] == {
        "type": "EpochRangeModifier",
        "start_epoch": 0.0,
        "end_epoch": 2.0,
    }


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_modifier_lists_known_ones_and_suggests(tmp_path):
    path = _write(
        tmp_path,
        """
        version: 1.1.0
        constant_modifiers:
          - !ConstantPrunigModifier
              params: __ALL_PRUNABLE__
        """,
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert (
        f"{path}:3: unknown modifier 'ConstantPrunigModifier' in constant_modifiers[0]" in message
    )
    assert "did you mean 'ConstantPruningModifier'" in message
    for name in known_modifiers():
        assert name in message


def test_several_problems_are_reported_together_with_file_line_modifier_field(tmp_path):
    path = _write(
        tmp_path,
        """
        num_epochs: 2
        bad_var: eval(1 / 0)
        training_modifiers:
          - !EpochRangeModifier
              end_epoch: eval(num_epochs)
              start_epochs: 0.0
          - !LearningRateFunctionModifier
              lr_func: linear
              init_lr: 0.1
              start_epoch: 0
              end_epoch: eval(num_epochs)
          - !SetWeightDecayModifier
              weight_decay: "a lot"
          - !EpochRangeModifier
              start_epoch: -2
          - !EpochRangeModifier
              start_epoch: 5
              end_epoch: 3
          - !SetWeightDecayModifier
              weight_decay: eval(missing_var * 2)
          - !SetWeightDecayModifier
              weight_decay: eval(bad_var)
        """,
    )
    with pytest.raises(RecipeProblems) as info:
        load_recipe(path)
    problems = _problems(info)
    expected = [
        (2, "variable 'bad_var': expression '1 / 0': division by zero"),
        (
            6,
            "EpochRangeModifier (training_modifiers[0]) field 'start_epochs': unknown field; "
            "did you mean 'start_epoch'?",
        ),
        (
            7,
            "LearningRateFunctionModifier (training_modifiers[1]) field 'final_lr': missing required field",
        ),
        (
            13,
            "SetWeightDecayModifier (training_modifiers[2]) field 'weight_decay': expected float, got 'a lot'",
        ),
        (15, "EpochRangeModifier (training_modifiers[3]) field 'start_epoch': must be >= 0"),
        (
            18,
            "EpochRangeModifier (training_modifiers[4]) field 'end_epoch': end_epoch 3.0 is before start_epoch 5.0",
        ),
        (
            20,
            "SetWeightDecayModifier (training_modifiers[5]) field 'weight_decay': expression "
            "'missing_var * 2': undefined variable 'missing_var'",
        ),
        (
            22,
            "SetWeightDecayModifier (training_modifiers[6]) field 'weight_decay': uses a variable that failed",
        ),
    ]
    assert len(problems) == len(expected), problems
    for problem, (line, text) in zip(problems, expected, strict=True):
        assert problem.startswith(f"{path}:{line}: {text}"), problem
    assert str(info.value).startswith(f"8 problem(s) in recipe {path}:")


def test_errors_in_a_string_recipe_name_the_string_source():
    with pytest.raises(
        RecipeError, match=r"<string>:3: EpochRangeModifier \(modifiers\[0\]\) field 'end_epoch'"
    ):
        load_recipe("modifiers:\n  - !EpochRangeModifier\n      end_epoch: -5\n")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("modifiers: [1, 2]\n", r"<string>:1: modifiers\[0\]: expected a modifier"),
        ("modifiers: 3\n", "must be a list of modifiers"),
        ("- a\n- b\n", "a recipe is a YAML mapping"),
        ("a: 1\na: 2\n", r"<string>:2: duplicate key 'a' \(first on line 1\)"),
        # Nested mappings too (PyYAML alone keeps the last value silently).
        ("a:\n  x: 1\n  x: 2\n", r"<string>:3: duplicate key 'x' \(first on line 2\)"),
        ("a: [1\n", "invalid YAML"),
        ("a: !Foo {}\n", r"tag '!Foo' is only allowed on an item of a '\*modifiers' list"),
        (
            "modifiers:\n  - !EpochRangeModifier\n      end_epoch: 1\n      end_epoch: 2\n",
            r"<string>:4: duplicate key 'end_epoch' \(first on line 3\)",
        ),
        ("modifiers:\n  - !EpochRangeModifier [1]\n", "its fields must be a mapping"),
        ("a: &a [1, *a]\n", "<string>:1: a value contains an alias of itself"),
    ],
)
def test_structural_errors(text, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(text)


def test_missing_file_and_zoo_stub():
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe("/nonexistent/recipe.yaml")
    with pytest.raises(RecipeError, match="zoo.resolve"):
        load_recipe("zoo:nlp/sentiment_analysis/obert-base/pytorch/huggingface/sst2/base-none")


# --- safety -----------------------------------------------------------------------------------------


def test_malicious_recipes_are_rejected_and_create_nothing(tmp_path):
    marker = tmp_path / "x"
    evil = [
        f'eval(__import__("os").system("touch {marker}"))',
        f"eval(open('{marker}', 'w'))",
        "eval(().__class__.__bases__[0].__subclasses__())",
        "eval(num_epochs.__class__)",
        "eval((lambda: 1)())",
        "eval([x for x in (1, 2)])",
        "eval(9**9**9)",
    ]
    for i, expression in enumerate(evil):
        recipe = _write(
            tmp_path,
            f"num_epochs: 2\nmodifiers:\n  - !EpochRangeModifier\n      end_epoch: {json.dumps(expression)}\n",
            f"evil{i}.yaml",
        )
        with pytest.raises(RecipeError) as info:
            load_recipe(recipe)
        message = str(info.value)
        assert f"evil{i}.yaml:4: EpochRangeModifier (modifiers[0]) field 'end_epoch'" in message
        assert expression[5:-1][:20] in message
        # In a variable too.
        with pytest.raises(RecipeError, match="variable 'v'"):
            load_recipe(f"v: {json.dumps(expression)}\n")
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"evil{i}.yaml" for i in range(len(evil))]


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system ['touch {marker}']\n",
        "modifiers:\n  - !EpochRangeModifier\n      end_epoch: !!python/object/apply:os.system ['touch {marker}']\n",
        "a: !!python/name:os.system\n",
    ],
)
def test_python_yaml_tags_are_rejected(tmp_path, text):
    marker = tmp_path / "x"
    with pytest.raises(RecipeError):
        load_recipe(text.format(marker=marker))
    assert not marker.exists()


# --- every recipe in the repository ----------------------------------------------------------------


def _repo_recipes() -> list[Path]:
    """YAML files under core/ or any recipes/ folder that declare modifiers."""
    found: list[Path] = []
    for path in sorted(REPO.glob("core/**/*.y*ml")) + sorted(REPO.glob("**/recipes/**/*.y*ml")):
        if ".venv" in path.parts or path in found:
            continue
        if "Modifier" in path.read_text(errors="replace"):
            found.append(path)
    return found


@pytest.mark.parametrize("path", _repo_recipes(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_in_the_repository_validates(path):
    recipe = load_recipe(path)
    assert recipe.modifiers, f"{path} has no modifiers"
    assert load_recipe(recipe.to_yaml()).to_dict()["modifiers"] == recipe.to_dict()["modifiers"]


def test_the_repository_recipe_scan_finds_the_builtins():
    names = {p.name for p in _repo_recipes()}
    assert {"sst2_pruned90_quant.yaml", "dense_teacher.yaml"} <= names


def test_alias_bomb_is_refused_quickly():
    import time

    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    start = time.perf_counter()
    with pytest.raises(RecipeError, match="expands to more than"):
        load_recipe("\n".join(lines) + "\n")
    assert time.perf_counter() - start < 2


# --- finite numbers only, and YAML read within bounds -----------------------------------------

NON_FINITE_RECIPES = [
    ("init_lr: .nan\n", "<string>:1: variable 'init_lr': value is NaN"),
    ("num_epochs: .inf\n", "<string>:1: variable 'num_epochs': value is infinity"),
    ("num_epochs: -.Inf\n", "<string>:1: variable 'num_epochs': value is -infinity"),
    ("lrs: [0.1, .NaN]\n", r"<string>:1: variable 'lrs': value\[1\] is NaN"),
    ("num_epochs: 1e999\n", "<string>:1: variable 'num_epochs': value is infinity"),
    ("num_epochs: eval(1e308 * 10)\n", "variable 'num_epochs': expression '1e308 \\* 10': result is inf"),
    (
        "modifiers:\n  - !EpochRangeModifier\n      end_epoch: .inf\n",
        r"<string>:3: EpochRangeModifier \(modifiers\[0\]\) field 'end_epoch': value is infinity",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "match"), NON_FINITE_RECIPES)
def test_nan_and_infinity_in_a_recipe_are_errors(text, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe(text)


@pytest.mark.parametrize(
    ("recipe_args", "match"),
    [
        ('{"init_lr": NaN}', "NaN is not a number JSON allows"),
        ('{"num_epochs": Infinity}', "Infinity is not a number JSON allows"),
        ('{"num_epochs": -Infinity}', "-Infinity is not a number JSON allows"),
        ('{"num_epochs": 1e999}', "recipe_args: 'num_epochs' is infinity"),
        ({"init_lr": float("nan")}, "recipe_args: 'init_lr' is NaN"),
        ({"init_lr": [1.0, float("inf")]}, r"recipe_args: 'init_lr'\[1\] is infinity"),
        ('{"num_epochs": 1' + "0" * 5000 + "}", "number longer than 400 characters"),
    ],
)
def test_nan_and_infinity_in_recipe_args_are_errors(recipe_args, match):
    recipe = builtin_recipe_path("sst2_pruned90_quant")
    with pytest.raises(RecipeError, match=match):
        load_recipe(recipe, recipe_args)


def test_recipe_check_json_never_prints_nan(tmp_path, capsys):
    from sparse_transfer.cli import main

    path = tmp_path / "nan.yaml"
    path.write_text(
        "num_epochs: .nan\nmodifiers:\n  - !EpochRangeModifier\n      end_epoch: eval(num_epochs)\n"
    )
    assert main(["recipe", "check", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{path}:1: variable 'num_epochs': value is NaN" in err
    recipe = str(builtin_recipe_path("sst2_pruned90_quant"))
    assert main(["recipe", "check", recipe, "--json", "--recipe_args", '{"init_lr": NaN}']) == 2
    assert capsys.readouterr().out == ""
    assert main(["recipe", "check", recipe, "--json"]) == 0

    def refuse(name):
        raise AssertionError(f"{name} in recipe check --json output")

    json.loads(capsys.readouterr().out, parse_constant=refuse)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        # YAML 1.1 sexagesimal ints cost quadratic time in PyYAML: 2 MB of them took minutes.
        ("a: 1" + ":0" * 200_000 + "\n", "<string>:1: number longer than 400 characters"),
        ("a: 1" + "0" * 5000 + "\n", "number longer than 400 characters"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "<string>:1: values nested more than 100 deep"),
    ],
)
def test_yaml_that_would_hang_or_crash_the_loader_is_refused_fast(text, match):
    import time

    start = time.thread_time()  # CPU time: a loaded CI machine does not make it flaky
    with pytest.raises(RecipeError, match=match):
        load_recipe(text)
    # ~1 s for the deep nesting (PyYAML's scanner looks ~1000 brackets ahead), ms otherwise
    assert time.thread_time() - start < 5
