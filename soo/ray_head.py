"""One local Ray runtime shared by the training stages of a machine.

Starting Ray costs a stage seconds (processes, actors, imports); a `dvc repro` with five seeds
and a paper row paid it ten times. The first stage that needs a local Ray starts a keeper process
(`python -m soo.ray_head`) that owns the runtime; every stage registers itself as a user while it
runs and joins by address. The keeper stops the runtime once no live user has been registered for
`idle_seconds`: a stage killed by Ctrl-C or SIGKILL stops counting as soon as its process is gone,
and two `dvc repro` at once share one runtime (their trainers queue for its CPUs).

State, under a file lock, in `state_dir()`: `head.json` (address, keeper pid) and `users/<pid>`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from soo.errors import TrainError

STATE_ENV = "SOO_RAY_HEAD_DIR"
START_TIMEOUT = 120.0  # seconds a new keeper may take to bring Ray up on a loaded machine

log = logging.getLogger("soo.ray_head")


def state_dir() -> Path:
    """One shared Ray per user and Python environment: Ray starts workers with the keeper's
    interpreter, so stages of another virtual environment get a keeper of their own."""
    env = hashlib.sha256(sys.executable.encode()).hexdigest()[:12]
    default = Path(tempfile.gettempdir()) / f"soo-ray-{os.getuid()}-{env}"
    return Path(os.environ.get(STATE_ENV) or default)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


AUTH_MODE_ENV = "RAY_AUTH_MODE"  # "token" (the project's default, soo.runtime) or "disabled"


def auth_mode() -> str:
    """Ray's authentication mode for this process: token unless RAY_AUTH_MODE says otherwise (a
    new local Ray of Ray 2.60 also turns tokens on when the variable is unset)."""
    return (os.environ.get(AUTH_MODE_ENV) or "token").strip().lower()


def token_path() -> Path:
    """Where Ray reads its token when neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is set."""
    return Path.home() / ".ray" / "auth_token"


def token_source() -> str | None:
    """Where Ray will read the token from, as Ray looks (RAY_AUTH_TOKEN, stripped; else the file
    at RAY_AUTH_TOKEN_PATH, with no fall-back; else ~/.ray/auth_token), or None when none holds
    one."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(named).expanduser() if named else token_path()
    try:
        return str(path) if path.read_text().strip() else None
    except OSError:
        return None


def ensure_auth_token() -> Path | None:
    """Before a local Ray starts with token authentication, make sure the user's token exists:
    written once, atomically, readable by the user alone. Ray would write it itself (readable by
    every user), and two stages starting their Rays at the same moment on a new machine would
    each write one: the first Ray's later processes would read the second's. Returns the file
    made or found; None when authentication is off or the environment names the token."""
    if auth_mode() != "token" or token_source() == "RAY_AUTH_TOKEN":
        return None
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None  # the user's own file: Ray reads it as it is
    path = token_path()
    try:
        return _write_token(path)
    except OSError as err:
        raise TrainError(
            f"cannot write the Ray token {path} ({err.strerror or err}); set RAY_AUTH_TOKEN (any "
            "64 hex digits, the same for every stage) or RAY_AUTH_MODE=disabled"
        ) from None


def _write_token(path: Path) -> Path:
    if token_source() is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():  # empty: Ray would find no token in it
            path.unlink()
        tmp = path.with_name(f".auth_token.{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))  # Ray's own format: 256 random bits in hex
            os.link(tmp, path)  # never replaces a token another process wrote first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by other users; made it private (chmod 600)", path)
        path.chmod(0o600)
    return path


def _started(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), or None when it is not running: a pid
    and its start time name one process, even after the pid is reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]  # state Z: exited, not yet reaped


def _alive(pid: int, started: str | None = None) -> bool:
    """The process runs (an exited child that nobody reaped yet does not); with `started`, it is
    also the same process as when that start time was read."""
    now = _started(pid)
    return now is not None and (started is None or now == started)


def _head(folder: Path) -> dict | None:
    """The running keeper's head.json, or None (no file, unreadable, or its keeper is gone)."""
    try:
        head = json.loads((folder / "head.json").read_text())
    except (OSError, ValueError):
        return None
    return head if _alive(int(head.get("pid", 0)), head.get("started")) else None


def _answers(address: str, timeout: float = 2.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError):
        return False
    return True


def _live_users(folder: Path) -> list[int]:
    """Registered users whose process still runs; the files of the others are removed."""
    users = folder / "users"
    users.mkdir(exist_ok=True)
    live = []
    for entry in users.iterdir():
        pid = int(entry.name) if entry.name.isdigit() else 0
        try:
            started = entry.read_text().strip() or None
        except OSError:  # released meanwhile
            continue
        if pid and _alive(pid, started):
            live.append(pid)
        else:
            entry.unlink(missing_ok=True)
    return live


def acquire(idle_seconds: float, folder: Path | None = None) -> tuple[str, bool]:
    """The address of the shared local Ray, started if none runs; this process is registered
    as a user until `release()` or its exit. Returns (address, whether this call started it)."""
    folder = folder or state_dir()
    ensure_auth_token()  # in the stage, so a failure is its one line; the keeper inherits it
    with _locked(folder):
        head, started = _head(folder), False
        if head is not None and not _answers(head["address"]):
            # The keeper runs but its Ray does not answer (killed under it): replace both.
            log.warning("the shared Ray at %s does not answer; starting another", head["address"])
            _stop(head["pid"])
            head = None
        theirs = head and head.get("auth_mode", "disabled")  # no key: a keeper without tokens
        if head is not None and theirs != auth_mode():
            if _live_users(folder):
                raise TrainError(
                    f"the shared local Ray runs with {AUTH_MODE_ENV}={theirs} and this stage has "
                    f"{auth_mode()}; use the same mode, or train.ray_keep_alive: 0 to give this "
                    "stage its own Ray"
                )
            log.warning("replacing the idle shared Ray of another authentication mode")
            _stop(head["pid"])
            head = None
        if head is None:
            head, started = _start_keeper(folder, idle_seconds), True
        (folder / "users").mkdir(exist_ok=True)
        (folder / "users" / str(os.getpid())).write_text(_started(os.getpid()) or "")
    return head["address"], started


def _stop(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM a keeper's process group (its own session) and wait for it to go."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def release(folder: Path | None = None) -> None:
    """This process no longer uses the shared Ray (the keeper stops it once idle)."""
    folder = folder or state_dir()
    with _locked(folder):
        (folder / "users" / str(os.getpid())).unlink(missing_ok=True)


def _start_keeper(folder: Path, idle_seconds: float) -> dict:
    (folder / "head.json").unlink(missing_ok=True)
    log_path = folder / "keeper.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "soo.ray_head", "--dir", str(folder)]
            + ["--idle-seconds", str(idle_seconds)],
            cwd=folder,  # not the first stage's folder, which a test may delete while Ray runs
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # Ctrl-C in the terminal reaches the stages, not the keeper
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        head = _head(folder)
        if head is not None and head["pid"] == proc.pid:
            log.info("started a shared local Ray at %s (keeper pid %d)", head["address"], proc.pid)
            return head
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    exited = proc.poll() is not None
    _stop(proc.pid)  # the keeper shuts down whatever Ray it started
    proc.wait()
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    what = "exited" if exited else f"did not start within {START_TIMEOUT:.0f} s"
    raise TrainError(
        f"the shared local Ray {what} ({tail[0]}); see {log_path}, or set "
        "train.ray_keep_alive: 0 to give each stage its own Ray"
    )


def keep(folder: Path, idle_seconds: float) -> None:
    """The keeper: start Ray, publish its address, stop it once idle (or on SIGTERM/SIGINT)."""
    import ray

    ray.init(
        address="local",  # a new Ray, never one found in /tmp/ray (a `ray start` left behind)
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    stop: list[bool] = []
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which sets its own
        signal.signal(sig, lambda *_: stop.append(True))
    address = ray.get_runtime_context().gcs_address
    print(f"{time.strftime('%H:%M:%S')} Ray up at {address} (pid {os.getpid()})", flush=True)
    try:
        if not stop:
            tmp = folder / f"head.json.{os.getpid()}"
            me = {"address": address, "pid": os.getpid(), "started": _started(os.getpid())}
            me["auth_mode"] = auth_mode()
            tmp.write_text(json.dumps(me))
            tmp.replace(folder / "head.json")
        idle_since = time.monotonic()
        while not stop:
            time.sleep(0.5)
            with _locked(folder):
                if _live_users(folder):
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= idle_seconds:
                    (folder / "head.json").unlink(missing_ok=True)  # new users start a new one
                    print(f"{time.strftime('%H:%M:%S')} unused for {idle_seconds} s", flush=True)
                    break
    finally:
        with _locked(folder):
            head = _head(folder)
            if head is not None and head["pid"] == os.getpid():
                (folder / "head.json").unlink(missing_ok=True)
        ray.shutdown()
        print(f"{time.strftime('%H:%M:%S')} Ray stopped", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Keep a shared local Ray while stages use it.")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    keep(args.dir or state_dir(), args.idle_seconds)


if __name__ == "__main__":
    main()
