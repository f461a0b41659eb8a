"""kfp's local DockerRunner, made to work on podman and to report a failed step as failed.

kfp 2.17.3's ``kfp/local/docker_task_handler.py`` starts every step with
``auto_remove=True`` and, when the container is already gone by the time it asks for the
exit code (podman removes it as soon as it exits), *assumes* exit code 0. A step that raised
then shows as ``finished with status SUCCESS`` and the run dies later at the next step with
an unrelated "output not found" error. `run_container` starts the container without
auto-remove, reads its real exit code, then removes it.
"""

from __future__ import annotations

import os
from typing import Any


def run_container(
    client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any
) -> int:
    """Same contract as kfp's ``run_docker_container``; returns the container's own exit code."""
    import docker.errors
    from kfp.local.docker_task_handler import add_latest_tag_if_not_present

    image = add_latest_tag_if_not_present(image=image)
    known = any(image in (i.tags + i.attrs.get("RepoDigests", [])) for i in client.images.list())
    if not known:
        print(f"Pulling image {image!r}")
        client.images.pull(image)
    container = client.containers.run(
        image=image,
        command=command,
        detach=True,
        stdout=True,
        stderr=True,
        volumes=volumes,
        auto_remove=False,
        **run_args,
    )
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(), end="")
        return int(container.wait()["StatusCode"])
    finally:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


def _translate_podman_not_found() -> None:
    """Podman answers "no such container" with HTTP 500 instead of 404; docker-py's callers
    expect NotFound, so that one answer is translated (once per process)."""
    import docker.api.client
    import docker.errors

    original = docker.api.client.create_api_error_from_http_exception
    if getattr(original, "_sparse_transfer_podman", False):
        return

    def podman_not_found(exc):
        response = exc.response
        if (
            response is not None
            and response.status_code == 500
            and "no such container" in response.text
        ):
            raise docker.errors.NotFound(exc, response=response, explanation=response.text)
        return original(exc)

    podman_not_found._sparse_transfer_podman = True
    docker.api.client.create_api_error_from_http_exception = podman_not_found


def docker_runner() -> Any:
    """kfp's DockerRunner set up for our image, for podman, and with real exit codes.

    Our image's entry point is `sparse-transfer`, but kfp passes `sh -c ...` as the
    command, so the entry point is reset to `/usr/bin/env`. Steps run as the
    calling user so they can write the host pipeline root that kfp mounts.
    ``DockerTaskHandler.run`` looks ``run_docker_container`` up in its module at call time,
    so replacing it there is enough.
    """
    from kfp import local
    from kfp.local import docker_task_handler

    _translate_podman_not_found()
    docker_task_handler.run_docker_container = run_container
    return local.DockerRunner(
        entrypoint=["/usr/bin/env"],
        user=f"{os.getuid()}:{os.getgid()}",
        network_mode="host",
    )
