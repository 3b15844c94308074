"""Security defaults: no pickle in the code, safetensors on disk, trust_remote_code off and logged,
servers on loopback."""

import re

import pytest

from soo.config import ModelParams
from soo.models import load_model
from tests.conftest import ROOT, project_files
from tests.tiny import save_tiny_model

PICKLE = re.compile(r"\bimport pickle\b|\bpickle\.|torch\.save\(|torch\.load\(|\bjoblib\b|dill\b")


def test_no_pickle_in_the_code():
    offenders = [
        name
        for name in project_files()
        if name.endswith(".py")
        and not name.startswith("tests/")
        and PICKLE.search((ROOT / name).read_text())
    ]
    assert offenders == []


def test_servers_and_remote_code_are_off_or_local_by_default():
    assert ModelParams().trust_remote_code is False
    # No dashboard on a Ray a stage starts (its own, or the shared keeper's). Their GCS and raylet
    # still listen on all interfaces in Ray 2.60, whatever node address is given: docs/guide.md.
    for module in ("ray_train.py", "ray_head.py"):
        assert "include_dashboard=False" in (ROOT / "soo" / module).read_text()
    from prefect.settings import get_current_settings

    assert get_current_settings().server.api.host == "127.0.0.1"  # the ephemeral server
    docs = (ROOT / "README.md").read_text() + (ROOT / "docs" / "guide.md").read_text()
    assert "mlflow server --host 127.0.0.1" in docs and "mlflow ui --host 127.0.0.1" in docs
    assert "0.0.0.0" not in docs


def test_trust_remote_code_is_logged_when_on(tmp_path, caplog):
    folder = save_tiny_model(tmp_path / "m", ["a b"])
    with caplog.at_level("WARNING"):
        load_model(str(folder), device="cpu", trust_remote_code=True)
    assert "trust_remote_code is ON" in caplog.text


def test_no_secrets_in_params():
    """params.yaml is logged to MLflow by every stage: it must hold no credentials."""
    text = (ROOT / "params.yaml").read_text().lower()
    assert not re.search(r"(password|secret|token|api_key|apikey)\s*:", text)


def test_credentials_in_a_tracking_uri_never_reach_logs_errors_or_params(caplog):
    """A remote tracking server with a password in its URL (port 9: nothing listens there)."""
    from soo.tracking import MlflowTracker, TrackingError, redact

    uri = "http://alice:s3cret@127.0.0.1:9"
    assert redact(f"server {uri}/api") == "server http://alice:***@127.0.0.1:9/api"
    assert redact("sqlite:////tmp/mlflow.db and ray://10.0.0.1:10001") == (
        "sqlite:////tmp/mlflow.db and ray://10.0.0.1:10001"
    )
    with caplog.at_level("WARNING"):
        MlflowTracker(uri, experiment="x", run_name="r")
    assert "127.0.0.1:9" in caplog.text and "s3cret" not in caplog.text
    with pytest.raises(TrackingError) as failed:
        MlflowTracker(uri, experiment="x", run_name="r", required=True)
    assert "alice:***@127.0.0.1:9" in str(failed.value) and "s3cret" not in str(failed.value)
