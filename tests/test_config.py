import subprocess
import sys
from pathlib import Path

import pytest

from soo.config import Params, describe, load_params
from soo.errors import ParamsError
from tests.conftest import ROOT, run_module

SOO = str(Path(sys.executable).parent / "soo")  # the installed console script


def test_code_defaults_are_the_papers_and_project_params_load():
    """A train section left empty gets the paper's Mistral-7B settings; params.yaml sets the
    organism's (docs/soo_on_the_organism.md)."""
    paper = Params().train
    assert (paper.lora.r, paper.lora.alpha, paper.lora.dropout) == (8, 32, 0.2)
    assert paper.lora.target_modules == ["q_proj", "v_proj"]
    assert (paper.lr, paper.layer, paper.epochs, paper.batch_size) == (1e-4, 0.6, 15, 4)
    assert paper.capability.weight == 0 and paper.loss == "mse"
    params = load_params(ROOT / "params.yaml")
    assert params.scenarios.n_test == 1000
    assert paper.module == "model.layers.{layer}.self_attn.o_proj"
    # The organism's setting was chosen on dev (docs/soo_on_the_organism.md, issues 15 and 17): the
    # paper's module and loss, its own layer, LoRA, lr and capability term.
    assert params.train.module == paper.module and params.train.loss == "mse"
    assert (params.train.layer, params.train.lr, params.train.capability.weight) == (3, 3e-3, 0.3)


def test_every_field_is_described():
    rows = describe(Params)
    assert rows and all(description for _, _, description in rows)


BAD = [
    ({"train.lora.r": -1}, r"^params\.yaml: train\.lora\.r: must be > 0, got -1$"),
    ({"scenarios.n_tests": 5}, r"scenarios\.n_tests: unknown key; did you mean 'n_test'\?"),
    ({"scenarios.n_test": "many"}, r"scenarios\.n_test: must be an integer, got 'many'"),
    (
        {"train.loss": "kl"},
        r"train\.loss: must be one of 'mse', 'legacy_logit_kl' or 'sft', got 'kl'",
    ),
    ({"train.alignment": "first"}, r"train\.alignment: must be one of 'full', 'last' or 'mean'"),
    ({"train.lora.dropout": 1.5}, r"train\.lora\.dropout: must be < 1\.0, got 1\.5"),
    (
        {"train.layer": 1.5},
        r"train\.layer: must be an integer index or a relative depth in \(0, 1\)",
    ),
    ({"train.module": "model.layers.3.mlp"}, r"train\.module: must contain '\{layer\}'"),
    ({"train.seeds": [1, 1]}, r"train\.seeds: must not repeat a seed"),
    (
        {"train.batch_size": 3, "train.num_workers": 2},
        r"train\.batch_size: must be divisible by num_workers x grad_accum_steps \(2 x 1\)",
    ),
    (
        {"scenarios.train_items": ["luxury watch", "leather wallet"]},
        r"scenarios\.train_items: test object 'exotic leather wallet' shares the word 'leather' "
        r"with training item 'leather wallet'; remove it",
    ),
    ({"scenarios.train_items": []}, r"scenarios\.train_items: must list at least one item"),
    ({"scenarios.n_test": 10**9}, r"scenarios\.n_test: must be <= 133980 .*got 1000000000"),
    ({"scenarios.vocabulary": "nope"}, r"scenarios\.vocabulary: 'nope' is neither a packaged"),
    (
        {"organism.corpus.contextual": True, "organism.corpus.others": {"Bob": 1}},
        r"organism\.corpus\.others: contextual and rival documents need at least two names",
    ),
    (
        {"surprise": 1},
        r"params\.yaml: surprise: unknown key; valid keys here: scenarios, organism, model, train, evaluate, baselines, summary, registry, promote, tracking",
    ),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[next(iter(o)) for o, _ in BAD])
def test_bad_params_name_the_key_and_the_fix(write_params, overrides, message):
    path = write_params(overrides)
    with pytest.raises(ParamsError, match=message):
        load_params(path)


def test_not_yaml_names_the_line(write_params):
    path = write_params(text="scenarios:\n  seed: 0\n n_test: [1\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: not valid YAML at line \d"):
        load_params(path)


def test_missing_params_file(tmp_path: Path):
    with pytest.raises(ParamsError, match="file not found; run from the project root"):
        load_params(tmp_path / "params.yaml")


def test_stage_and_cli_exit_2_with_one_line(write_params, tmp_path: Path):
    write_params({"train.lora.r": -1})
    stage = run_module(["-m", "stages.scenarios"], cwd=tmp_path)
    assert stage.returncode == 2
    assert stage.stderr.strip() == "params.yaml: train.lora.r: must be > 0, got -1"
    assert not (tmp_path / "data").exists()
    cli = subprocess.run([SOO, "params"], cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 2
    assert cli.stderr.strip() == "params.yaml: train.lora.r: must be > 0, got -1"


def test_cli_params_prints_every_key(write_params, tmp_path: Path):
    write_params()
    cli = subprocess.run([SOO, "params"], cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert "train.lora.r = 32" in cli.stdout and "params.yaml: OK" in cli.stdout


def test_the_paper_setting_resets_every_method_setting_and_nothing_else(write_params):
    from soo.config import PAPER_KEYS, paper_differences, paper_setting

    shipped = load_params(write_params({})).train  # the organism's setting in params.yaml
    paper = paper_setting(shipped)
    assert paper_differences(paper) == []
    assert paper_differences(shipped)  # the shipped setting is not the paper's
    assert paper.seeds == shipped.seeds and paper.num_workers == shipped.num_workers
    assert paper.module.endswith("self_attn.o_proj") and paper.layer == 0.6
    assert paper.lora.target_modules == ["q_proj", "v_proj"] and paper.capability.weight == 0
    assert len(PAPER_KEYS) == len(set(PAPER_KEYS))


def test_the_smollm2_pipeline_runs_the_paper_setting_into_its_own_outputs():
    """smollm2/params.yaml: the paper's method settings on SmolLM2 (layer 0.6 = 18 of 30), a
    registered-model name and every output path of its own, so that its stages and the main
    pipeline's never write the same file (DVC refuses two stages with one output)."""
    import yaml

    from soo import paths
    from soo.config import load_params, paper_differences

    smol, main = load_params(ROOT / "smollm2/params.yaml"), load_params(ROOT / "params.yaml")
    assert paper_differences(smol.train) == [] and smol.train.capability.weight == 0
    assert smol.model.name_or_path == "models/smollm2" and smol.evaluate.capability == "text"
    # one machine: Ray Train's local mode, no Ray start-up per seed (issue 20)
    deceiver = load_params(ROOT / "smollm2/deceiver/params.yaml")
    assert smol.train.num_workers == 0 and deceiver.train.num_workers == 0
    assert smol.registry.name != main.registry.name
    for where in (
        lambda p: p.train.output_dir,
        lambda p: p.train.metrics_dir,
        lambda p: p.evaluate.metrics_dir,
        lambda p: p.evaluate.generations_dir,
        lambda p: p.summary.path,
        lambda p: p.summary.plots_dir,
        paths.registered,
        paths.reports,
    ):
        assert str(where(smol)) != str(where(main))
    families = set(smol.evaluate.families)
    assert {"burglar", "perspectives"} <= families and len(families) >= 3  # + a generalization
    stages = yaml.safe_load((ROOT / "smollm2/dvc.yaml").read_text())["stages"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stages["register_smollm2"]["outs"]]
    assert outs == [str(paths.registered(smol))]
    for name, stage in stages.items():
        if name != "fetch_smollm2":
            stage = stage.get("do", stage)
            assert "--params smollm2/params.yaml" in stage["cmd"], name
