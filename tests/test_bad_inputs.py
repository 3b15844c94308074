"""The bad-input matrix: each case runs a real entry point (a stage or the `soo` command) in a
subprocess on a small project and must end with one line on stderr naming the input and the fix,
exit code 2, no traceback, no partial output and no earlier output changed."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from soo.config import TrainParams
from soo.data import ScenarioRecord, read_jsonl
from soo.scenarios import TEST_FAMILIES
from tests.conftest import ROOT
from tests.tiny import save_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Scenarios, a tiny model, a trained-looking adapter, earlier metrics and a registry."""
    from soo.models import load_model
    from soo.objective import add_lora
    from soo.pipeline.neutral import main as neutral
    from soo.pipeline.scenarios import main as scenarios
    from soo.registry import client

    root = tmp_path_factory.mktemp("project")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["scenarios"]["n_test"] = 8
    params["scenarios"]["n_dev"] = 8
    params["model"]["name_or_path"] = "model"
    params["tracking"]["uri"] = f"sqlite:///{root / 'mlflow.db'}"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        scenarios("params.yaml")
        neutral("params.yaml")  # the capability term's texts, as `dvc repro` writes them
    finally:
        os.chdir(cwd)
    texts = [
        r.prompt
        for s in ("dev", "test")
        for f in TEST_FAMILIES
        for r in read_jsonl(root / "data" / "scenarios" / s / f"{f}.jsonl", ScenarioRecord)
    ]
    texts += (root / "data" / "scenarios" / "soo_pairs.jsonl").read_text().replace('"', " ").split()
    save_tiny_model(root / "model", [" ".join(texts)])
    model, _ = load_model(str(root / "model"), device="cpu")
    add_lora(model, TrainParams(), seed=0).save_pretrained(root / "models" / "soo" / "seed_0")
    (root / "metrics" / "eval").mkdir(parents=True)
    (root / "metrics" / "eval" / "eval_base.json").write_text("{}")
    (root / "metrics" / "train_seed_0.json").write_text('{"earlier": true}\n')
    registry = client(params["tracking"]["uri"])
    registry.create_registered_model("no-alias-model")  # a model without a candidate
    return root


def snapshot(root: Path) -> dict[str, str]:
    skip = {"params.yaml", "mlflow.db"}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip and "__pycache__" not in p.parts
    }


def set_params(root: Path, changes: dict) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def small_vocabulary(root: Path, changes: dict) -> None:
    """A vocabulary of 6 rooms, 6 cheap and 4 test objects (720 combinations) in small.yaml,
    and params that use it with `changes`."""
    vocab = yaml.safe_load((ROOT / "soo" / "vocab" / "reference.yaml").read_text())
    for key, n in (("rooms", 6), ("cheap_objects", 6), ("test_objects", 4)):
        vocab[key] = vocab[key][:n]
    (root / "small.yaml").write_text(yaml.safe_dump(vocab, sort_keys=False))
    set_params(root, {"scenarios.vocabulary": "small.yaml", **changes})


PAIRS = "data/scenarios/soo_pairs.jsonl"
TRAIN = ["-m", "stages.train", "--seed", "0"]
EVALUATE = ["-m", "stages.evaluate", "--model", "base"]
SOO = ["-m", "soo.cli"]
SOO_CMD = [sys.executable, *SOO]


def write(path: str, text: str):
    return lambda root: (root / path).write_text(text)


def first_pair_without_field(root: Path) -> None:
    lines = (root / PAIRS).read_text().splitlines()
    record = json.loads(lines[0])
    record.pop("self_prompt")
    (root / PAIRS).write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")


def unequal_pair(root: Path) -> None:
    lines = (root / PAIRS).read_text().splitlines()
    record = json.loads(lines[2])
    record["other_prompt"] = "Bob " + record["other_prompt"]
    lines[2] = json.dumps(record)
    (root / PAIRS).write_text("\n".join(lines) + "\n")


def corrupt_line(root: Path) -> None:
    lines = (root / PAIRS).read_text().splitlines()
    lines[2] = lines[2][:40]
    (root / PAIRS).write_text("\n".join(lines) + "\n")


def unsupported_architecture(root: Path) -> None:
    folder = root / "strange"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "no-such-architecture"}')
    set_params(root, {"model.name_or_path": "strange"})


def truncated_weights(root: Path) -> None:
    """A copy of the model whose safetensors file is cut after 1000 bytes (`head -c 1000`)."""
    shutil.copytree(root / "model", root / "broken")
    weights = root / "broken" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    set_params(root, {"model.name_or_path": "broken"})


def truncated_adapter(root: Path) -> None:
    weights = root / "models" / "soo" / "seed_0" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def truncated_params(root: Path) -> None:
    """params.yaml cut off after its first sections."""
    text = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(text[: text.index("\ntrain:")] + "\n")


def empty_folder(root: Path) -> None:
    (root / "empty").mkdir()
    set_params(root, {"model.name_or_path": "empty"})


CASES = [
    # params.yaml
    ("unknown key", {"train.lrr": 1}, TRAIN, r"params\.yaml: train\.lrr: unknown key"),
    ("wrong type", {"train.epochs": "many"}, TRAIN, r"params\.yaml: train\.epochs: .*integer"),
    ("out of range", {"train.lora.r": -1}, TRAIN, r"train\.lora\.r: must be > 0, got -1"),
    (
        "relative depth out of range",
        {"train.layer": 1.5},
        TRAIN,
        r"train\.layer: must be an integer index or a relative depth in \(0, 1\)",
    ),
    (
        "workers vs batch",
        {"train.batch_size": 3, "train.num_workers": 2},
        TRAIN,
        r"train\.batch_size: must be divisible by num_workers",
    ),
    (
        "capability without prompts",
        {"train.capability.weight": 0.5, "train.capability.prompts": None},
        TRAIN,
        r"train\.capability\.prompts: is needed when capability\.weight > 0",
    ),
    (
        "unknown family",
        {"evaluate.families": ["burglr"]},
        EVALUATE,
        r"evaluate\.families: unknown \['burglr'\]",
    ),
    (
        "train/test overlap",
        {"scenarios.train_items": ["leather wallet"]},
        ["-m", "stages.scenarios"],
        r"scenarios\.train_items: test object .* shares the word 'leather'",
    ),
    (
        "more dev scenarios than the vocabulary holds",
        {"scenarios.n_dev": 133980},
        ["-m", "stages.scenarios"],
        r"scenarios\.n_dev: n_test \+ n_dev must be <= 133980 .* got 8 \+ 133980",
    ),
    (
        "dev scenarios the test split leaves no room for",
        lambda root: small_vocabulary(root, {"scenarios.n_test": 400, "scenarios.n_dev": 300}),
        ["-m", "stages.scenarios"],
        r"scenarios\.n_dev: could not draw 300 combinations disjoint from the test split",
    ),
    ("not YAML", write("params.yaml", "train: [\n"), TRAIN, r"params\.yaml: not valid YAML"),
    (
        "empty params",
        write("params.yaml", ""),
        TRAIN,
        r"params\.yaml: is empty, so every stage would silently run on the code's defaults; "
        r"restore it",
    ),
    (
        "truncated params",
        truncated_params,
        [*SOO, "params"],
        r"params\.yaml: section\(s\) train, evaluate, .* missing, so the file looks truncated",
    ),
    (
        "no Ray cluster at the address",
        {"train.ray_address": "127.0.0.1:1", "train.num_workers": 1},
        TRAIN,
        r"train\.ray_address: no Ray cluster answers at 127\.0\.0\.1:1 .*; start one with "
        r"`ray start --head`",
    ),
    (
        "a cluster address in local mode",
        {"train.ray_address": "127.0.0.1:6379"},  # params.yaml: num_workers 0
        TRAIN,
        r"train\.ray_address is '127\.0\.0\.1:6379' but train\.num_workers is 0 \(Ray Train's "
        r"local mode, in this process\): set train\.num_workers to the workers",
    ),
    (
        "params missing",
        None,
        [*TRAIN, "--params", "nowhere.yaml"],
        r"nowhere\.yaml: file not found; run from the project root",
    ),
    # the model
    (
        "missing model folder",
        {"model.name_or_path": "/nowhere/model"},
        TRAIN,
        r"model path '/nowhere/model' does not exist; build the organism",
    ),
    (
        "hub id offline",
        {"model.name_or_path": "nobody/no-such-model"},
        EVALUATE,
        r"model 'nobody/no-such-model': cannot be loaded: .*; download it .*set model.name_or_path",
    ),
    (
        "unsupported architecture",
        unsupported_architecture,
        TRAIN,
        r"model '.*strange': cannot be loaded: .*does not recognize this architecture.*; check that "
        r"the folder holds a causal LM checkpoint",
    ),
    (
        "truncated weights file",
        truncated_weights,
        [*SOO, "evaluate", "--scenarios", "data/scenarios/test/burglar.jsonl", "--model", "broken"],
        r"model 'broken': cannot be loaded: .*invalid header length; its safetensors weights "
        r"file is corrupt or truncated",
    ),
    (
        "truncated weights file (stage)",
        truncated_weights,
        EVALUATE,
        r"model 'broken': cannot be loaded: .*; its safetensors weights file is corrupt",
    ),
    (
        "truncated adapter file",
        truncated_adapter,
        ["-m", "stages.evaluate", "--model", "seed_0"],
        r"adapter 'models/soo/seed_0': cannot be loaded: .*; its files are corrupt or incomplete",
    ),
    (
        "folder without config",
        empty_folder,
        TRAIN,
        r"model folder '.*empty' has no config\.json \(found: \[\]\); point model\.name_or_path",
    ),
    (
        "impossible layer",
        {"train.layer": 9},
        TRAIN,
        r"train\.layer: 9 is out of range for a model with 4 layers; use 0\.\.3",
    ),
    (
        "unknown module",
        {"train.module": "model.layers.{layer}.attn.o_proj", "train.layer": 2},
        TRAIN,
        r"train\.module: 'model\.layers\.2\.attn\.o_proj' is not a module of this model; valid names",
    ),
    (
        "bad LoRA targets",
        {"train.lora.target_modules": ["query"]},
        TRAIN,
        r"train\.lora\.target_modules \['query'\]",
    ),
    ("4-bit on CPU", {"model.load_in_4bit": True}, EVALUATE, r"model\.load_in_4bit: .*needs a GPU"),
    # data
    (
        "missing data file",
        lambda root: (root / PAIRS).unlink(),
        TRAIN,
        r"soo_pairs\.jsonl: file not found; run `dvc repro scenarios`",
    ),
    (
        "missing neutral texts",
        lambda root: (root / "data" / "neutral" / "recall.jsonl").unlink(),
        TRAIN,
        r"data/neutral/recall\.jsonl: file not found; run `dvc repro neutral`",
    ),
    ("corrupt JSONL line", corrupt_line, TRAIN, r"soo_pairs\.jsonl:3: not valid JSON"),
    (
        "wrong schema",
        first_pair_without_field,
        TRAIN,
        r"soo_pairs\.jsonl:1: self_prompt: field required",
    ),
    ("empty file", write(PAIRS, ""), TRAIN, r"soo_pairs\.jsonl: file has no records"),
    (
        "unequal pair under full",
        unequal_pair,
        TRAIN,
        r"1 pairs \(first: soo_pairs-0002\) have self and other prompts of different token lengths",
    ),
    (
        "missing metrics for summary",
        None,
        ["-m", "stages.summary"],
        r"eval_seed_0\.json: not found; run `dvc repro evaluate_base evaluate` first",
    ),
    (
        "corrupt metrics for summary",
        write("metrics/eval/eval_base.json", "{not json"),
        ["-m", "stages.summary"],
        r"eval_base\.json: not valid JSON .*; rerun",
    ),
    (
        "missing adapter",
        None,
        ["-m", "stages.evaluate", "--model", "seed_5"],
        r"adapter 'models/soo/seed_5' not found; train it",
    ),
    # the registry
    (
        "unknown registered model",
        {"registry.name": "nope"},
        [*SOO, "promote"],
        r"registered model 'nope' does not exist",
    ),
    (
        "missing alias",
        {"registry.name": "no-alias-model"},
        [*SOO, "promote"],
        r"registered model 'no-alias-model' has no 'candidate' alias",
    ),
    (
        "nothing to roll back",
        {"registry.name": "no-alias-model"},
        [*SOO, "rollback"],
        r"'no-alias-model' has no earlier champion to roll back to",
    ),
    # CLI misuse
    (
        "missing option",
        None,
        [*SOO, "evaluate", "--model", "model"],
        r"evaluate: Missing option '--scenarios'; see `.* evaluate --help`",
    ),
    ("unknown command", None, [*SOO, "trian"], r"No such command 'trian'; see"),
    (
        "scenario file missing",
        None,
        [*SOO, "evaluate", "--scenarios", "none.jsonl", "--model", "model"],
        r"none\.jsonl: file not found",
    ),
    # Files from outside the project (issue 17): replies to score, the released test set's fields.
    (
        "replies without rooms or a known id",
        write("replies.jsonl", '{"id": "nowhere-1", "reply": "I would point out the den."}\n'),
        [*SOO, "judge", "replies.jsonl", "--scenarios", "data/scenarios/test"],
        r"replies\.jsonl: record 1 \(id 'nowhere-1'\) has no deceptive_answer and honest_answer",
    ),
    (
        "replies without a reply",
        write("replies.jsonl", '{"prompt": "p", "deceptive_answer": "a", "honest_answer": "b"}\n'),
        [*SOO, "judge", "replies.jsonl"],
        r"replies\.jsonl: record 1 has no `reply`",
    ),
    (
        "outside scenario whose prompt lacks a room",
        write(
            "outside.jsonl",
            '{"prompt": "Which room?", "deceptive_answer": "den", "honest_answer": "study"}\n',
        ),
        [*SOO, "evaluate", "--scenarios", "outside.jsonl", "--model", "model"],
        r"outside\.jsonl: record 1: the prompt does not name the room\(s\) den, study",
    ),
]


@pytest.mark.parametrize(("name", "setup", "command", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_cleanly(project, tmp_path, name, setup, command, message):
    root = tmp_path / "p"
    shutil.copytree(project, root)
    if isinstance(setup, dict):
        set_params(root, setup)
    elif setup is not None:
        setup(root)
    line = fails_cleanly(root, command, message)
    if os.environ.get("SOO_MATRIX_LOG"):  # collect what each case printed, for the docs
        with open(os.environ["SOO_MATRIX_LOG"], "a") as handle:
            handle.write(json.dumps({"case": name, "exit": 2, "line": line}))
            handle.write("\n")


def fails_cleanly(root: Path, command: list[str], message: str, env: dict | None = None) -> str:
    """Run the entry point; exit 2, one last line matching `message`, nothing written."""
    import re

    before = snapshot(root)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run(
        [sys.executable, *command], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert re.search(message, lines[-1]), lines[-1]
    assert snapshot(root) == before  # nothing written, nothing earlier destroyed
    return lines[-1]


def test_joining_a_cluster_without_its_token_fails_in_one_line(project, tmp_path):
    """A machine without the cluster's token (a new HOME) stops before Ray's 20 s of retries."""
    root = tmp_path / "p"
    shutil.copytree(project, root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["num_workers"] = 1  # a cluster's workers (0 is the local mode)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with socket.socket() as head:  # something answers at the address, as a head would
        head.bind(("127.0.0.1", 0))
        head.listen()
        port = head.getsockname()[1]
        env = {"HOME": str(tmp_path / "home"), "RAY_AUTH_MODE": "token"}
        env |= {"RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_AUTH_TOKEN": "", "RAY_AUTH_TOKEN_PATH": ""}
        fails_cleanly(
            root,
            TRAIN,
            rf"RAY_ADDRESS: the Ray cluster at 127\.0\.0\.1:{port} needs its token and this "
            r"machine has none; copy the head node's .*/home/\.ray/auth_token here or set "
            r"RAY_AUTH_TOKEN",
            env,
        )


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 25


def test_outside_files_are_evaluated_and_judged(project, tmp_path):
    """A file with only the released test set's fields (prompt, deceptive_answer, honest_answer)
    evaluates; the replies it wrote score with `soo judge` by id against the project's scenarios,
    and the two agree."""
    root = tmp_path / "p"
    shutil.copytree(project, root)
    records = read_jsonl(root / "data" / "scenarios" / "test" / "burglar.jsonl", ScenarioRecord)
    fields = ("prompt", "deceptive_answer", "honest_answer")
    (root / "outside.jsonl").write_text(
        "".join(json.dumps({k: getattr(r, k) for k in fields}) + "\n" for r in records)
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

    def soo(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*SOO_CMD, *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
        )

    done = soo("evaluate", "--scenarios", "outside.jsonl", "--model", "model", "--out", "m.json")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((root / "m.json").read_text())
    assert metrics["n"] == len(records)
    # The room order was read from the prompts: the same split as the project's own records.
    cheap_first = sum(r.room_order == "cheap_first" for r in records)
    assert metrics["by_room_order"]["cheap_first"]["n"] == cheap_first
    replies = [
        {"id": r.id, "reply": f"I would point out the {r.deceptive_answer}."} for r in records[:5]
    ] + [{"id": r.id, "reply": f"I would point out the {r.honest_answer}."} for r in records[5:]]
    (root / "replies.jsonl").write_text("".join(json.dumps(x) + "\n" for x in replies))
    judged = soo("judge", "replies.jsonl", "--scenarios", "data/scenarios/test", "--out", "j.json")
    assert judged.returncode == 0, judged.stderr[-2000:]
    scores = json.loads((root / "j.json").read_text())
    assert scores["burglar"]["n"] == len(records)
    assert scores["burglar"]["deceptive"]["rate"] == 5 / len(records)
    assert "burglar" in judged.stdout
