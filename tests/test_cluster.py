"""The guide's "Running on a cluster" commands rehearsed on one machine: a Ray head started with
`ray start --head` that a train stage joins through RAY_ADDRESS, and a Prefect server, `prefect
deploy --all`, a process worker on the `soo-process` pool and a deployment run that completes.
Everything a test starts is stopped by its process group at the end."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from soo import ray_head
from tests.conftest import TINY_TRAIN

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def started(args: list[str], cwd: Path, env: dict, log: Path):
    """A long-running command in its own process group, stopped (the whole group) at the end."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(predicate, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log else ""
    raise AssertionError(f"{what} not ready within {timeout} s\n{tail}")


def answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


def test_a_train_stage_joins_a_ray_head_through_ray_address(stage_project, write_params):
    root, _ = stage_project
    write_params(TINY_TRAIN | {"train.num_workers": 1})  # the guide's -S train.num_workers=1
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"  # as the guide's commands export it
    ray_head.ensure_auth_token()  # the user's token, private (`generate` would make it 0644)
    # The guide's first command: the head's token (made once, kept in ~/.ray/auth_token).
    token = subprocess.run(
        [str(BIN / "ray"), "get-auth-token", "--generate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert token.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}", token.stdout), token.stderr
    head = [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port)]
    head += ["--node-ip-address", "127.0.0.1", "--include-dashboard", "false", "--num-cpus", "2"]
    log = root / "ray-head.log"
    try:
        with started(head, root, env, log):
            wait_for(lambda: answers(port), 120, "ray start --head", log)
            stage = subprocess.run(
                [sys.executable, "-m", "stages.train", "--seed", "0"],
                cwd=root,
                env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"},
                capture_output=True,
                text=True,
                timeout=300,
            )
    finally:
        # `ray start` records its head for later `ray.init()` calls and only `ray stop` (which
        # stops every Ray of the machine) clears it: forget this one, so nothing joins it dead.
        current = Path("/tmp/ray/ray_current_cluster")
        with contextlib.suppress(OSError):
            if current.read_text().strip().endswith(f":{port}"):
                current.unlink()
    assert stage.returncode == 0, stage.stderr[-3000:]
    assert re.search(r"seed 0: Ray joined$", stage.stderr, re.M)  # not a local or shared Ray
    metrics = json.loads((root / "metrics" / "train_seed_0.json").read_text())
    assert metrics["steps"] > 0 and (root / "models" / "soo" / "seed_0").is_dir()
    wait_for(lambda: not answers(port), 30, "the head stopping")  # gone with its group


def test_prefect_server_deploy_worker_and_a_deployment_run(repo_copy, tmp_path):
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["scenarios"]["n_test"] = 10
    params["scenarios"]["n_dev"] = 10
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "SOO_PROJECT_DIR": str(repo_copy),
    }
    prefect = str(BIN / "prefect")

    def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [prefect, *args],
            cwd=repo_copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        return done

    def healthy() -> bool:
        with contextlib.suppress(OSError):
            return urllib.request.urlopen(f"{api}/health", timeout=2).status == 200
        return False

    server = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    with started(server, repo_copy, env, server_log):
        wait_for(healthy, 180, "prefect server", server_log)
        cli("work-pool", "create", "soo-process", "--type", "process")
        deployed = cli("--no-prompt", "deploy", "--all")
        assert "soo-pipeline/nightly" in deployed.stdout
        worker = [prefect, "worker", "start", "--pool", "soo-process"]
        with started(worker, repo_copy, env, worker_log):
            run = cli(
                "deployment",
                "run",
                "soo-pipeline/nightly",
                "--param",
                'stages=["scenarios"]',
                "--watch",
                "--watch-timeout",
                "400",
                timeout=450,
            )
    assert "finished successfully in 'Completed'" in run.stdout, run.stdout[-2000:]
    burglar = repo_copy / "data" / "scenarios" / "test" / "burglar.jsonl"
    assert len(burglar.read_text().splitlines()) == 10  # the stage ran in the worker, on the copy
    wait_for(lambda: not answers(port), 30, "the server stopping")  # gone with its group
