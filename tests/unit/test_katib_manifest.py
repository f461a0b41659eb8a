"""pipelines/katib/frontier-experiment.yaml against Katib's v1beta1 API (tests/data/katib/).

Katib's CRD has no structural schema, so its webhook is what refuses a bad Experiment: it
decodes into the Go types (their OpenAPI definitions are the vendored swagger.json; unknown
fields are refused here so a typo does not pass silently) and checks the rules below
(pkg/webhook/v1beta1/experiment/validator/validator.go, kubeflow/katib at 33c8ff4e5).
"""

import json
import re
from pathlib import Path

import jsonschema
import pytest

from sparse_transfer import safe_yaml
from sparse_transfer.pipeline.frontier import STRUCTURES

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "pipelines" / "katib" / "frontier-experiment.yaml"
SWAGGER = ROOT / "tests" / "data" / "katib" / "v1beta1_swagger.json"
# Kubernetes types the swagger file refers to but does not define: any object.
EXTERNAL = ("v1.Container", "v1.HTTPGetAction", "v1.ListMeta", "v1.ObjectMeta", "v1.Time",
            "v1.unstructured.Unstructured")  # fmt: skip


def _schema() -> dict:
    definitions = json.loads(SWAGGER.read_text())["definitions"]
    for name, definition in definitions.items():
        if name.startswith("v1beta1.") and "properties" in definition:
            definition["additionalProperties"] = False
    definitions.update({name: {"type": "object"} for name in EXTERNAL})
    return {"$ref": "#/definitions/v1beta1.Experiment", "definitions": definitions}


def _errors(experiment: dict) -> list[str]:
    """Schema errors plus the webhook's rules the schema cannot say."""
    validator = jsonschema.Draft4Validator(_schema())
    out = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(experiment)]
    spec = experiment.get("spec", {})
    name = experiment.get("metadata", {}).get("name", "")
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):  # validator.go ValidateExperiment
        out.append(f"metadata.name {name!r}")
    counts = [spec.get(k, 1) for k in ("parallelTrialCount", "maxTrialCount")]
    if all(isinstance(c, int) for c in counts) and counts[0] > counts[1]:
        out.append("parallelTrialCount > maxTrialCount")
    if spec.get("objective", {}).get("type") not in ("minimize", "maximize"):
        out.append("objective.type")
    names = {p["name"] for p in spec.get("parameters", [])}
    for p in spec.get("parameters", []):  # validateParameters
        space = p.get("feasibleSpace", {})
        if p["parameterType"] in ("discrete", "categorical") and not space.get("list"):
            out.append(f"parameter {p['name']}: feasibleSpace.list")
    template = spec.get("trialTemplate", {})
    declared = {t["name"] for t in template.get("trialParameters", [])}
    for t in template.get("trialParameters", []):  # validateTrialTemplate
        if t["reference"] not in names:
            out.append(f"trialParameter {t['name']}: reference {t['reference']!r} is no parameter")
    used = set(re.findall(r"\$\{trialParameters\.([^}]+)\}", json.dumps(template.get("trialSpec"))))
    if used != declared:
        out.append(f"trialSpec uses {sorted(used)}, trialParameters declare {sorted(declared)}")
    trial = template.get("trialSpec", {})
    if "name" in trial.get("metadata", {}) or not trial.get("apiVersion") or not trial.get("kind"):
        out.append("trialSpec: apiVersion and kind, no metadata.name")
    containers = trial.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    if template.get("primaryContainerName") not in {c["name"] for c in containers}:
        out.append("primaryContainerName names no container")
    return out


@pytest.fixture
def experiment():
    return safe_yaml.load(MANIFEST.read_text(), str(MANIFEST))


def test_manifest_is_a_valid_katib_experiment(experiment):
    assert _errors(experiment) == []


def test_it_searches_the_frontier_pipelines_grid_with_its_trial_command(experiment):
    from pipelines.frontier_pipeline import DEFAULT_POINTS

    spec = experiment["spec"]
    space = {p["name"]: p["feasibleSpace"]["list"] for p in spec["parameters"]}
    grid = {f"{st}:{s}" for st in space["structure"] for s in space["sparsity"]}
    assert grid == set(DEFAULT_POINTS) and set(space["structure"]) == set(STRUCTURES)
    assert spec["maxTrialCount"] == len(grid) and spec["algorithm"]["algorithmName"] == "grid"
    (container,) = spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["sparse-transfer", "frontier", "trial"]
    # what the trial prints is what Katib collects (cli/frontier.py)
    assert spec["objective"]["objectiveMetricName"] == "accuracy"
    assert spec["objective"]["additionalMetricNames"] == ["latency_ms"]
    from sparse_transfer.cli import build_parser

    args = build_parser().parse_args(
        [c.replace("${trialParameters.structure}:${trialParameters.sparsity}", "block4:0.9")
         for c in container["command"][1:]]
    )  # fmt: skip
    assert args.point == "block4:0.9" and args.max_seq_length == 64


@pytest.mark.parametrize(
    "break_it, expected",
    [
        (lambda e: e["spec"].update(parallelTrialCount="4"), "parallelTrialCount: '4' is not of type 'integer'"),
        (lambda e: e["spec"]["objective"].update(objectiveMetricname="x"), "Additional properties are not allowed"),
        (lambda e: e["spec"]["trialTemplate"]["trialParameters"].pop(), "trialSpec uses"),
        (lambda e: e["spec"]["parameters"][0].update(feasibleSpace={}), "feasibleSpace.list"),
        (lambda e: e["metadata"].update(name="Sparse_Frontier"), "metadata.name"),
    ],
)  # fmt: skip
def test_broken_experiments_are_refused(experiment, break_it, expected):
    break_it(experiment)
    assert any(expected in e for e in _errors(experiment)), _errors(experiment)
