"""The layout: arrows point one way (entry points -> library -> leaves), one home per concern."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

ENTRY_POINTS = ("stages", "flows", "scripts", "benchmarks", "tests")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module an import statement in `path` names, function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from soo import templates` imports the module soo.templates
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def library_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (ROOT / "soo").rglob("*.py")}
    return {
        name: {m for m in imports_of(path) if m in files and m != name}
        for name, path in files.items()
    }


def test_the_library_never_imports_an_entry_point():
    for path in (ROOT / "soo").rglob("*.py"):
        wrong = sorted(m for m in imports_of(path) if m.split(".")[0] in ENTRY_POINTS)
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path of imports that comes back to where it started, or None."""
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if name in trail:
            return trail[trail.index(name) :] + [name]
        if name in done:
            return None
        for target in sorted(graph.get(name, ())):
            if found := visit(target, [*trail, name]):
                return found
        done.add(name)
        return None

    for name in sorted(graph):
        if found := visit(name, []):
            return found
    return None


def test_the_library_has_no_import_circle():
    graph = library_graph()
    assert {"soo.config", "soo.organism.corpus", "soo.train"} <= set(graph)  # the walk sees soo
    assert graph["soo.organism.build"] >= {"soo.organism.corpus", "soo.config"}
    circle = find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_circle_finder_finds_circles():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_reading_params_loads_neither_scenarios_nor_the_organism():
    code = "import sys, soo.config; print(sorted(m for m in sys.modules if m.startswith('soo')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    loaded = set(eval(out))  # a printed list of module names
    assert loaded == {"soo", "soo.config", "soo.errors", "soo.names", "soo.vocabulary"}, loaded


def test_one_adapter_loader():
    """`PeftModel.from_pretrained` appears once in the project: in soo.models."""
    calls = [
        path.relative_to(ROOT).as_posix()
        for folder in ("soo", *ENTRY_POINTS)
        for path in (ROOT / folder).rglob("*.py")
        if "PeftModel.from_pretrained(" in path.read_text() and path.name != "test_layout.py"
    ]
    assert calls == ["soo/models.py"]


def test_stages_are_thin():
    """Each DVC stage only parses its arguments and calls soo.pipeline."""
    for path in (ROOT / "stages").glob("*.py"):
        if path.name == "__init__.py":
            continue
        imported = imports_of(path)
        library = {m for m in imported if m.startswith("soo.")}
        assert library <= {"soo.runtime", f"soo.pipeline.{path.stem}"} | {
            f"soo.pipeline.{path.stem}.main",
            "soo.runtime.run_entry",
            "soo.runtime.params_entry",
        }, (path.name, library)
        assert len(path.read_text().splitlines()) < 30, path.name


def test_dvc_yaml_names_the_paths_the_pipeline_writes():
    """soo.paths is the one place the code derives output paths; dvc.yaml must agree with it."""
    import yaml

    from soo import paths
    from soo.config import load_params

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = load_params(ROOT / "params.yaml")

    def outputs(stage: str, item: int | None = None) -> set[str]:
        spec = stages[stage]["do"] if "do" in stages[stage] else stages[stage]
        found = set()
        for key in ("outs", "metrics", "plots"):
            for entry in spec.get(key, []):
                name = next(iter(entry)) if isinstance(entry, dict) else entry
                for section in ("train", "evaluate", "organism", "scenarios"):
                    for field, value in getattr(params, section).model_dump().items():
                        name = name.replace(f"${{{section}.{field}}}", str(value))
                found.add(name.replace("${item}", str(item)))
        return found

    assert str(paths.NEUTRAL_TEXTS) in outputs("neutral")
    assert {
        str(paths.adapter_dir(params, 0)),
        str(paths.train_metrics(params, 0)),
        str(paths.train_curve(params, 0)),
    } <= outputs("train", 0)
    for split in paths.SPLITS:
        assert {
            str(paths.eval_metrics(params, "base", split)),
            str(paths.generations(params, "base", split)),
        } <= outputs("evaluate_base")
        assert {
            str(paths.eval_metrics(params, "seed_0", split)),
            str(paths.generations(params, "seed_0", split)),
        } <= outputs("evaluate", 0)
    assert str(paths.registered(params)) in outputs("register")
    assert str(paths.promotion(params)) in outputs("promote")
    assert any(o.startswith(f"{paths.reports(params)}/") for o in outputs("report"))


def test_every_param_a_dvc_stage_lists_is_in_its_params_file():
    """DVC refuses a stage whose listed param is missing from the file it names (after the stage
    has run: `dvc repro smollm2/dvc.yaml` lost a 10-minute evaluation so), so each listed key must
    be written in that file, not left to the code's default."""
    import yaml

    def present(tree, key: str) -> bool:
        for part in key.split("."):
            if not isinstance(tree, dict) or part not in tree:
                return False
            tree = tree[part]
        return True

    missing = []
    for dvc_file in [ROOT / "dvc.yaml", *sorted(ROOT.glob("*/**/dvc.yaml"))]:
        if ".venv" in dvc_file.parts:
            continue
        spec = yaml.safe_load(dvc_file.read_text())
        for name, stage in spec["stages"].items():
            stage = stage.get("do", stage)
            wdir = (dvc_file.parent / stage.get("wdir", ".")).resolve()
            for entry in stage.get("params", []):
                files = entry if isinstance(entry, dict) else {"params.yaml": [entry]}
                for file, keys in files.items():
                    tree = yaml.safe_load((wdir / file).read_text())
                    missing += [
                        f"{dvc_file.relative_to(ROOT)}:{name}: {file} {key}"
                        for key in keys
                        if not present(tree, key)
                    ]
    assert not missing, missing
