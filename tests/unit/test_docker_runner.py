"""A step that fails in a container fails the run: our DockerRunner reads the real exit code.

kfp 2.17.3's ``run_docker_container`` uses ``auto_remove=True`` and returns 0 when the container
is gone before ``wait()`` (what podman does). The fake Docker client below behaves like podman:
an auto-removed container vanishes the moment it exits.
"""

import docker.errors
import pytest
from kfp.local import docker_task_handler, status

from pipelines import docker_runner


class FakeContainer:
    def __init__(self, exit_code: int, auto_remove: bool):
        self.exit_code, self.auto_remove, self.removed = exit_code, auto_remove, False

    def logs(self, stream=True, follow=False):
        yield b"Traceback ...\n"
        yield b"sparse_transfer.errors.ExportError: export failed\n"

    def wait(self):
        if self.auto_remove:  # podman removed it as soon as it exited
            raise docker.errors.NotFound("no such container")
        return {"StatusCode": self.exit_code}

    def remove(self, force=False):
        self.removed = True


class FakeImages:
    def list(self):
        return [type("Image", (), {"tags": ["img:1"], "attrs": {"RepoDigests": []}})()]


class FakeClient:
    def __init__(self, exit_code: int):
        self.exit_code, self.started = exit_code, []
        self.images, self.containers = FakeImages(), self

    def run(self, auto_remove, **kwargs):
        container = FakeContainer(self.exit_code, auto_remove)
        self.started.append((container, kwargs))
        return container

    def info(self):
        return {}

    def close(self):
        pass


def test_kfps_own_runner_reports_a_failed_step_as_success_on_podman():
    """The bug being worked around (if kfp fixes it, this test says so)."""
    from importlib import reload

    kfp_original = reload(docker_task_handler).run_docker_container  # undo any patch
    assert kfp_original is not docker_runner.run_container
    assert kfp_original(FakeClient(1), "img:1", ["sh"], {}) == 0  # exit code 1 read as 0


@pytest.mark.parametrize("exit_code", [0, 1, 137])
def test_run_container_returns_the_steps_own_exit_code_and_cleans_up(exit_code, capsys):
    client = FakeClient(exit_code)
    assert docker_runner.run_container(client, "img:1", ["sh", "-c", "x"], {"/r": {}}) == exit_code
    ((container, kwargs),) = client.started
    assert container.auto_remove is False and container.removed is True
    assert kwargs["command"] == ["sh", "-c", "x"] and kwargs["volumes"] == {"/r": {}}
    assert "ExportError: export failed" in capsys.readouterr().out  # the step's own error


def test_docker_runner_makes_kfps_handler_fail_the_step(monkeypatch, tmp_path):
    runner = docker_runner.docker_runner()
    assert docker_task_handler.run_docker_container is docker_runner.run_container
    monkeypatch.setattr("docker.from_env", lambda: FakeClient(1))
    handler = docker_task_handler.DockerTaskHandler(
        image="img:1", full_command=["sh"], pipeline_root=str(tmp_path), runner=runner
    )
    assert handler.run() == status.Status.FAILURE
    monkeypatch.setattr("docker.from_env", lambda: FakeClient(0))
    assert handler.run() == status.Status.SUCCESS
