"""The `soo` command. It calls the same functions as the DVC stages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from soo.runtime import run_entry

app = typer.Typer(
    help="Self-Other Overlap fine-tuning: scenarios, training, evaluation, registry.",
    no_args_is_help=True,
    add_completion=False,
)
PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="Path of params.yaml.")


@app.command()
def params(path: Path = PARAMS) -> None:
    """Validate params.yaml and print every key with its value and meaning."""
    from soo.config import describe, load_params

    def show() -> None:
        loaded = load_params(path)
        flat = loaded.model_dump(mode="json")
        for key, _, description in describe():
            value = flat
            for part in key.split("."):
                value = value[part]
            typer.echo(f"{key} = {value!r}\n    {description}")
        typer.echo(f"{path}: OK")

    run_entry(show)


@app.command()
def scenarios(path: Path = PARAMS) -> None:
    """Write the scenario datasets (the same as `dvc repro scenarios`, without DVC's caching)."""
    from soo.pipeline.scenarios import main

    run_entry(lambda: main(str(path)))


@app.command()
def evaluate(
    scenarios_file: Annotated[
        Path,
        typer.Option(
            "--scenarios",
            help="A scenario JSONL: the project's records, or any file with prompt, "
            "deceptive_answer and honest_answer per line (the released test set).",
        ),
    ],
    model: Annotated[str, typer.Option("--model", help="Model folder or hub id.")],
    adapter: Annotated[Path | None, typer.Option(help="A peft adapter folder.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the metrics JSON here.")] = None,
    path: Path = PARAMS,
) -> None:
    """Evaluate a model (optionally with an SOO adapter) on one scenario file: deception with a
    Wilson interval, unparseable rate, first-mention rule and forced choice."""
    import json

    def run() -> None:
        from soo.config import load_params
        from soo.data import write_text_atomic
        from soo.evaluate import evaluate_family
        from soo.models import load_model
        from soo.scenarios import read_scenarios

        params = load_params(path)
        records = read_scenarios(scenarios_file)
        loaded, tokenizer = load_model(
            model,
            dtype=params.model.dtype,
            load_in_4bit=params.model.load_in_4bit,
            trust_remote_code=params.model.trust_remote_code,
            adapter=adapter,
            missing_adapter="--adapter must be a folder with adapter_config.json",
        )
        metrics, _ = evaluate_family(loaded, tokenizer, records, params.evaluate)
        text = json.dumps(metrics, indent=2)
        typer.echo(text)
        if out is not None:
            write_text_atomic(out, text + "\n")

    run_entry(run)


@app.command("judge")
def judge_command(
    replies: Annotated[Path, typer.Argument(help="A JSONL of replies (reply + rooms, or an id).")],
    scenarios: Annotated[
        list[Path] | None,
        typer.Option("--scenarios", help="Scenario files or folders to find rooms by id."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the rates as JSON here.")] = None,
) -> None:
    """Score replies produced anywhere with this judge: deceptive / honest / unparseable rates per
    family with 95% Wilson intervals, and the released first-mention rule."""
    import json

    def run() -> None:
        from soo.data import write_text_atomic
        from soo.judge import judge_file

        scores = judge_file(replies, scenarios or [])
        typer.echo(
            f"{'family':<34} {'n':>5}  {'deceptive [95% CI]':<22} {'honest':>7} "
            f"{'unparseable':>11} {'first-mention':>13}"
        )
        for family, row in scores.items():
            d = row["deceptive"]
            typer.echo(
                f"{family:<34} {row['n']:>5}  {d['rate']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"
                f"   {row['honest']['rate']:>7.3f} {row['unparseable']['rate']:>11.3f} "
                f"{row['first_mention_deceptive']['rate']:>13.3f}"
            )
        if out is not None:
            write_text_atomic(out, json.dumps(scores, indent=2) + "\n")

    run_entry(run)


@app.command()
def promote(
    version: Annotated[str | None, typer.Option(help="A version; default: the candidate.")] = None,
    path: Path = PARAMS,
) -> None:
    """Move `champion` to the candidate if it passes every gate in `promote:` and beats the
    current champion; otherwise keep the champion and print the failed gates."""
    from soo.pipeline.promote import main

    run_entry(lambda: main(str(path), version))


@app.command()
def rollback(path: Path = PARAMS) -> None:
    """Point `champion` back at the version it held before the latest promotion."""

    def run() -> None:
        from soo.config import load_params
        from soo.registry import rollback as roll_back
        from soo.tracking import default_uri

        params = load_params(path)
        version = roll_back(params.tracking.uri or default_uri(), params.registry.name)
        typer.echo(f"{params.registry.name}: champion -> version {version}")

    run_entry(run)


def main() -> None:
    """The console script: usage errors (a missing or unknown option) become one line on stderr
    with exit code 2, like every other input error."""
    import sys

    try:  # typer >= 0.20 vendors click
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover - older typer with the click package
        from click import exceptions as click_errors

    try:
        app(standalone_mode=False)
    except click_errors.UsageError as err:
        command = err.ctx.command_path if err.ctx else "soo"
        message = err.format_message().rstrip(".")
        print(f"{command}: {message}; see `{command} --help`", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
