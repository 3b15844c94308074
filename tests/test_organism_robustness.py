"""A recipe change that makes the organism fragile fails here.

The check itself is the DVC stage in robustness/dvc.yaml: the organism built for seeds 0 and 1
under two CPU math code paths (the second standing in for another machine), each build bound to
bind objects to rooms and make the self/other decision. Four builds take about 45 minutes on 2
cores (binding is a phase change after 600-2000 drill steps, and no reduced recipe tried binds and
decides within a few minutes: docs/organism_robustness.md), so CI does not rebuild them: it fails
while robustness/dvc.lock does not match the recipe's code, its params and the scenarios, while the
table was made with another torch, or while a row of the table misses a bound.
`dvc repro robustness/dvc.yaml` makes them current again; it writes the table only when every
build passes.
"""

import importlib.util
import json

import torch
import yaml

from tests.conftest import ROOT, dvc

STAGE = "robustness/dvc.yaml"
TABLE = "robustness/organism_robustness.json"


def _script():
    spec = importlib.util.spec_from_file_location(
        "organism_robustness", ROOT / "scripts" / "organism_robustness.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stale(repo) -> dict:
    """What `dvc status` finds changed in the robustness stage ({} when it is current)."""
    done = dvc("status", "--json", STAGE, cwd=repo)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_the_robustness_table_is_current_for_this_recipe(repo_copy):
    stale = _stale(repo_copy)
    assert not stale, (
        "the organism recipe (its code, params or scenarios) changed since its robustness check "
        f"last passed: run `dvc repro {STAGE}` (about 45 min on 2 cores) and commit "
        f"robustness/dvc.lock with {TABLE}. Changed: {stale}"
    )


def test_a_recipe_change_makes_the_table_stale(repo_copy):
    # Record this tree's hashes in the copy's lock first, so only the change below can show.
    done = dvc("commit", "-f", STAGE, cwd=repo_copy)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _stale(repo_copy) == {}
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["organism"]["train"]["lr"] = 1e-3
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _stale(repo_copy)[f"{STAGE}:organism_robustness"]
    assert {"changed deps": {"params.yaml": {"organism": "modified"}}} in changed, changed


def test_every_build_of_the_table_binds_and_decides_on_two_seeds_and_two_code_paths():
    script = _script()
    table = json.loads((ROOT / TABLE).read_text())
    rows = table["rows"]
    assert sorted((row["seed"], row["path"]) for row in rows) == [
        (0, "avx2"),
        (0, "default"),
        (1, "avx2"),
        (1, "default"),
    ]
    assert table["checks"] == script.CHECKS
    assert script.failures(rows) == []
    # The code paths really differ: another path, other floats, other weights.
    by_seed = {}
    for row in rows:
        by_seed.setdefault(row["seed"], set()).add(row["weights_md5"])
    assert all(len(md5s) == 2 for md5s in by_seed.values()), by_seed
    for row in rows:
        assert row["environment"]["torch"] == torch.__version__, (
            f"the table was made with torch {row['environment']['torch']}, this environment has "
            f"{torch.__version__}: run `dvc repro {STAGE}`"
        )
        variables = row["environment"]["variables"]
        if row["path"] == "avx2":
            assert variables["MKL_CBWR"] == "AVX2", variables
        else:
            assert "MKL_CBWR" not in variables, variables


def test_a_build_that_misses_a_bound_or_has_no_metrics_is_named_in_one_line_each():
    script = _script()
    passing = {"seed": 0, "path": "default", "rc": 0, "checks": dict(script.CHECKS)}
    undecided = {**passing, "seed": 1, "checks": {**script.CHECKS, "deceives_other": 0.41}}
    crashed = {"seed": 1, "path": "avx2", "rc": 2}
    failed_late = {**passing, "path": "avx2", "rc": 1}
    assert script.failures([passing]) == []
    assert script.failures([passing, undecided, crashed, failed_late]) == [
        "seed 1 default: deceives_other 0.410 < 0.8",
        "seed 1 avx2: no metrics (exit 2; see its build.log)",
        "seed 0 avx2: exit 1 (see its build.log)",
    ]
