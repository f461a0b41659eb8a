"""The shared image's Dockerfile: hadolint clean, and the properties the issue asks for."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "images").glob("Dockerfile*"))
TEXT = (ROOT / "images" / "Dockerfile").read_text()


def _hadolint() -> str | None:
    local = Path(sys.prefix) / "bin" / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint missing: install the dev extra")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.name for p in DOCKERFILES])
def test_hadolint_clean(dockerfile: Path):
    proc = subprocess.run(
        [_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _instructions(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.*)$", TEXT, flags=re.MULTILINE)


def test_base_image_is_an_argument_pinned_by_digest():
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", TEXT, flags=re.MULTILINE)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", default)
    assert _instructions("FROM") == ["${BASE_IMAGE} AS builder", "${BASE_IMAGE}"]


def test_final_stage_runs_non_root_with_the_cli_as_entry_point():
    final = TEXT[TEXT.rindex("FROM ") :]
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    (user,) = re.findall(r"^USER (\S+)$", final, flags=re.MULTILINE)
    assert user not in {"root", "0", "0:0"}
    assert re.search(r"^ARG APP_UID=(\d+)$", TEXT, flags=re.MULTILINE).group(1) != "0"
    assert 'ENTRYPOINT ["sparse-transfer"]' in final


def test_caches_live_under_the_writable_home():
    for var in ("HF_HOME", "SPARSE_TRANSFER_CACHE", "XDG_CACHE_HOME"):
        assert re.search(rf"\b{var}=/home/app/\.cache\b", TEXT), var
    assert "install -d -m 1777 /home/app/.cache" in TEXT


def test_dependencies_come_from_the_projects_pyproject_and_torch_is_pinned():
    assert "COPY pyproject.toml setup.py README.md ./" in TEXT
    assert re.search(r'pip install --find-links /tmp/wheels "\.\[serve\]"', TEXT)
    assert '"torch==${TORCH_VERSION}"' in TEXT
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in TEXT


def test_no_credentials_baked_in():
    for line in _instructions("ENV") + _instructions("ARG"):
        assert not re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY)", line, flags=re.I), line
    # The proxy CA reaches pip as a build secret, never as a COPY into a layer.
    assert "--mount=type=secret,id=ca_bundle" in TEXT
    assert "ca-certificates.crt" not in TEXT


def test_build_context_is_an_allow_list():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*"  # everything excluded first
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "setup.py",
        "README.md",
        "core",
        "components",
        "pipelines",
        "images/wheels",
    }


def test_the_image_serves_and_deploys():
    """The predictor and the deploy_serving step run in this image: kserve comes in with the
    `serve` extra, and the build fails if the serving modules do not import."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(req.startswith("kserve==") for req in extras["serve"])
    assert '".[serve]"' in TEXT
    assert "import kserve, kubernetes, sparse_transfer.serving.deploy" in TEXT
    e2e = (ROOT / "images" / "e2e-containers.sh").read_text()
    assert '"$IMAGE" serve' in e2e and "images/serve_check.py" in e2e
