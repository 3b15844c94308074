"""The benchmark scripts run end to end: the GPU check on Mistral's architecture at toy size
(its code path on a CPU), and the evaluation benchmark's FLOP count."""

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_gpu_check_runs_its_code_path_on_a_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--shape", "tiny", "--steps", "2"]
        + ["--prompts", "8", "--new-tokens", "4", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["shape"] == "tiny" and result["train_4bit"] == {"status": "4-bit needs a GPU"}
    for loop in ("paper", "released"):
        assert result["train"][loop]["pairs_per_second"] > 0
    # The released loop keeps full logits over 32000 words for two forwards: more memory
    assert result["train"]["released"]["peak_gib"] > result["train"]["paper"]["peak_gib"]
    assert result["generation"]["prompts"] == 8


def test_the_flop_count_follows_the_model_and_the_tokens():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import tempfile

    from eval_throughput import run_flops
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny import save_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        save_tiny_model(folder, ["a b c d e"])
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    hidden, layers = model.config.hidden_size, model.config.num_hidden_layers
    # a 3-token prompt (no chat template) and a 2-token reply plus its end token: 6 tokens
    flops = run_flops(model, tokenizer, ["a b c"], ["d e"])
    assert flops == pytest.approx(6 * (2 * linear + 4 * layers * hidden * 3))
