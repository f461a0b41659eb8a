"""DeepSparse's interleaved rounds: the worker's round loop and the client that steps it.

No DeepSparse here: the loop (`deepsparse_runner.answer_rounds`) runs with a stand-in
engine that only counts its runs, in process and behind a real subprocess pipe, so the
protocol and the failure paths are what is tested. The real engine is covered in
tests/integration/test_deepsparse.py where its interpreter exists.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from sparse_transfer.export import deepsparse_runner as runner
from sparse_transfer.export.benchmark import _deepsparse_result
from sparse_transfer.export.deepsparse_rounds import DeepSparseRounds


class CountingEngine:
    def __init__(self) -> None:
        self.runs = 0

    def run(self, feeds):
        self.runs += 1
        return []


def test_each_round_times_every_model_iterations_times_until_end():
    engines = {"a.onnx": (CountingEngine(), []), "b.onnx": (CountingEngine(), [])}
    facts = {"a.onnx": {"num_cores": 1}, "b.onnx": {"num_cores": 1}}
    replies = io.StringIO()
    code = runner.answer_rounds(
        engines, facts, 3, 0.0, io.StringIO("round\nround\nend\nround\n"), replies
    )
    assert code == 0
    lines = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert lines[0] == {"ready": True, "facts": facts}
    assert len(lines) == 3  # ready + two rounds; nothing after "end"
    for times in lines[1:]:
        assert set(times) == {"a.onnx", "b.onnx"} and all(len(t) == 3 for t in times.values())
    assert [e.runs for e, _ in engines.values()] == [6, 6]


def test_an_unknown_command_is_answered_with_an_error_and_ends_the_worker():
    replies = io.StringIO()
    engines = {"a.onnx": (CountingEngine(), [])}
    assert runner.answer_rounds(engines, {}, 1, 0.0, io.StringIO("go\nround\n"), replies) == 2
    last = json.loads(replies.getvalue().splitlines()[-1])
    assert last == {"error": "unknown command 'go': expected round or end"}
    assert engines["a.onnx"][0].runs == 0


WORKER = """
import sys
sys.path.insert(0, {folder!r})
import deepsparse_runner as runner

class Engine:
    runs = 0
    def run(self, feeds):
        Engine.runs += 1
        if Engine.runs > {crash_after}:
            sys.stderr.write("RuntimeError: engine lost\\n")
            sys.exit(3)

engines = {{p: (Engine(), []) for p in sys.argv[1:]}}
facts = {{p: {{"fraction_of_supported_ops": 1.0}} for p in sys.argv[1:]}}
sys.exit(runner.answer_rounds(engines, facts, 2, 0.0, sys.stdin, sys.stdout))
"""


def _client(tmp_path: Path, crash_after: int) -> DeepSparseRounds:
    script = tmp_path / "worker.py"
    script.write_text(
        WORKER.format(folder=str(Path(runner.__file__).parent), crash_after=crash_after)
    )
    paths = {"dense": tmp_path / "d.onnx", "sparse": tmp_path / "s.onnx"}
    return DeepSparseRounds([sys.executable, str(script), *map(str, paths.values())], paths)


def test_the_client_collects_one_round_per_step_under_each_name(tmp_path):
    client = _client(tmp_path, crash_after=10**6)
    try:
        for _ in range(3):
            client.step()
    finally:
        client.close()
    assert client.failure is None
    result = _deepsparse_result(client, batch=1)
    assert result["available"] and result["interleaved"] and result["python"] == sys.executable
    for name in ("dense", "sparse"):
        assert result[name]["rounds"] == 3 and result[name]["iterations"] == 6
        assert result[name]["fraction_of_supported_ops"] == 1.0


def test_a_worker_that_dies_mid_run_is_reported_and_not_stepped_again(tmp_path):
    client = _client(tmp_path, crash_after=5)  # round 1: 4 runs; dies in round 2
    try:
        for _ in range(4):
            client.step()
    finally:
        client.close()
    assert client.failure.startswith("exit 3 while a round") and "engine lost" in client.failure
    assert len(client.rounds_s["dense"]) == 1
    result = _deepsparse_result(client, batch=1)
    assert result == {"available": False, "reason": f"deepsparse failed: {client.failure}"}


def test_deepsparse_runs_the_named_deployments_only_and_refuses_unknown_names(tmp_path):
    import pytest

    from sparse_transfer.errors import ExportError
    from sparse_transfer.export.benchmark import _deepsparse_paths

    paths = {"dense": tmp_path / "d.onnx", "ORT dynamic int8": tmp_path / "q.onnx"}
    assert _deepsparse_paths(paths, None) == paths
    assert _deepsparse_paths(paths, ["dense"]) == {"dense": tmp_path / "d.onnx"}
    with pytest.raises(ExportError, match=r"deepsparse_names \['densee'\]: not among"):
        _deepsparse_paths(paths, ["densee"])
