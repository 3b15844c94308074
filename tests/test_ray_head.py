"""The shared local Ray (soo.ray_head): started once, joined by later users, stopped once idle,
and a user killed without cleaning up (Ctrl-C, SIGKILL) stops counting."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from soo import ray_head
from tests.conftest import TINY_TRAIN

pytestmark = pytest.mark.slow


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _user(folder, idle: float) -> subprocess.Popen:
    """Another process that acquires the shared Ray, says so, and waits to be killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from soo import ray_head
        address, started = ray_head.acquire({idle}, Path({str(folder)!r}))
        print(address, started, flush=True)
        time.sleep(600)
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_one_ray_is_shared_and_stopped_once_nobody_uses_it(tmp_path):
    import ray

    folder = tmp_path / "head"
    address, started = ray_head.acquire(4.0, folder)
    assert started
    keeper = ray_head._head(folder)["pid"]
    ray.init(address=address, log_to_driver=False)  # a driver joins the keeper's Ray
    assert ray.get(ray.remote(lambda: 6 * 7).remote()) == 42
    ray.shutdown()

    # Token authentication (the project's default): a stage with a wrong token stays out, and
    # says so in one line naming the setting.
    join = textwrap.dedent(f"""
        from soo.config import TrainParams
        from soo.errors import TrainError
        from soo.ray_train import _ray_session
        try:
            with _ray_session(TrainParams(ray_address={address!r})):
                print("JOINED")
        except TrainError as err:
            print(err)
    """)
    wrong = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}
    refused = subprocess.run(
        [sys.executable, "-c", join], env=wrong, capture_output=True, text=True, timeout=120
    )
    assert re.match(
        rf"train\.ray_address: the Ray cluster at {re.escape(address)} refused this machine "
        r"\(Failed to connect to Ray cluster.*\); its token \(RAY_AUTH_TOKEN\) must be",
        refused.stdout,
    ), refused.stdout + refused.stderr[-2000:]

    other = _user(folder, 4.0)  # a second user joins the same Ray instead of starting one
    try:
        assert other.stdout.readline().split() == [address, "False"]
        with pytest.MonkeyPatch.context() as patch:  # a stage of the other mode is one line
            patch.setenv("RAY_AUTH_MODE", "disabled")
            with pytest.raises(ray_head.TrainError, match=r"runs with RAY_AUTH_MODE=token and"):
                ray_head.acquire(4.0, folder)
        ray_head.release(folder)
        time.sleep(6)  # past the idle time, but the second user still runs
        assert ray_head._head(folder)["pid"] == keeper
    finally:
        other.send_signal(signal.SIGKILL)  # gone without releasing: its entry is pruned
        other.wait()
    assert _wait(lambda: not ray_head._alive(keeper), 30), "the keeper outlived its users"
    assert not (folder / "head.json").exists()
    assert not list((folder / "users").iterdir())

    address2, started2 = ray_head.acquire(2.0, folder)  # the next user starts a new one
    assert started2 and ray_head._head(folder)["pid"] != keeper
    ray_head.release(folder)
    new = ray_head._head(folder)["pid"]
    assert _wait(lambda: not ray_head._alive(new), 30)


def test_a_keeper_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    """A Ray that does not come up within the start timeout fails the stage with the log's path
    and the key that avoids the shared Ray, not a hang."""
    monkeypatch.setattr(ray_head, "START_TIMEOUT", 0.5)
    with pytest.raises(ray_head.TrainError, match=r"did not start within .*ray_keep_alive: 0"):
        ray_head.acquire(1.0, tmp_path / "head")
    assert not (tmp_path / "head" / "users" / str(os.getpid())).exists()


def test_training_stages_share_one_ray_and_log_their_overhead(stage_project, write_params):
    """Two `train@<seed>` stages in a row: the first starts the shared Ray, the second joins it
    (the same keeper), and each records its overhead (stage time minus training steps)."""

    root, _ = stage_project
    write_params(TINY_TRAIN | {"train.ray_keep_alive": 30, "train.num_workers": 1})
    folder = root / "ray-head"
    env = {**os.environ, ray_head.STATE_ENV: str(folder)}
    runs = [
        subprocess.run(
            [sys.executable, "-m", "stages.train", "--seed", str(seed)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        for seed in (0, 1)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(r"seed 0: Ray shared \(started\)$", runs[0].stderr, re.M)
    assert re.search(r"seed 1: Ray shared$", runs[1].stderr, re.M)
    keeper = ray_head._head(folder)["pid"]  # still up: the idle time has not run out
    log = (folder / "keeper.log").read_text()
    assert log.count("Ray up at") == 1 and f"(pid {keeper})" in log
    for seed in (0, 1):
        metrics = json.loads((root / "metrics" / f"train_seed_{seed}.json").read_text())
        assert metrics["overhead_seconds"] == pytest.approx(
            metrics["stage_seconds"] - metrics["seconds"], abs=0.02
        )
        # Its spans (setup, Ray and workers, worker setup, finish, export) and the steps add up
        # to the stage's time: each span lies between two real marks.
        spans = metrics["overhead"]
        assert set(spans) == {"setup", "ray_and_workers", "worker_setup", "finish", "export"}
        assert sum(spans.values()) == pytest.approx(metrics["overhead_seconds"], abs=0.5)
        assert f"seed {seed}: loss" in runs[seed].stderr and "ray_and_workers" in runs[seed].stderr
        # the local Ray's workers are set up by the quiet hook: no state-API warning per second
        assert "Failed to query Ray Train Controller" not in runs[seed].stderr + runs[seed].stdout
    os.kill(keeper, signal.SIGTERM)  # the keeper stops its Ray on SIGTERM
    assert _wait(lambda: not ray_head._alive(keeper), 30)
    assert not (folder / "head.json").exists()


def test_the_token_is_made_once_private_and_never_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # unset: tokens, as Ray's own default
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    path = ray_head.ensure_auth_token()
    assert path == tmp_path / ".ray" / "auth_token"
    token = path.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert path.stat().st_mode & 0o777 == 0o600
    assert ray_head.ensure_auth_token() == path and path.read_text() == token  # kept
    assert ray_head.token_source() == str(path)
    # One written by `ray get-auth-token --generate` (readable by all) is kept, made private.
    path.chmod(0o644)
    assert ray_head.ensure_auth_token() == path and path.read_text() == token
    assert path.stat().st_mode & 0o777 == 0o600
    # An empty file holds no token for Ray: replaced.
    path.write_text("")
    assert ray_head.token_source() is None
    assert re.fullmatch(r"[0-9a-f]{64}", ray_head.ensure_auth_token().read_text())
    # Processes racing on a new machine end with one whole token and no staging file.
    path.unlink()
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", "from soo import ray_head; ray_head.ensure_auth_token()"],
            env={**os.environ},
        )
        for _ in range(4)
    ]
    assert all(proc.wait(60) == 0 for proc in racers)
    assert re.fullmatch(r"[0-9a-f]{64}", path.read_text())
    assert list(path.parent.iterdir()) == [path]
    # The token comes from the environment, or authentication is off: nothing is written.
    path.unlink()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a" * 64)
    assert ray_head.ensure_auth_token() is None and not path.exists()
    assert ray_head.token_source() == "RAY_AUTH_TOKEN"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "  ")  # Ray strips it: no token
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    assert ray_head.ensure_auth_token() is None and ray_head.token_source() is None
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("HOME", "/proc/no-home")  # a home where nothing can be written
    with pytest.raises(ray_head.TrainError, match=r"cannot write the Ray token .*RAY_AUTH_TOKEN"):
        ray_head.ensure_auth_token()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert ray_head.ensure_auth_token() is None and not path.exists()
