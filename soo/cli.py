"""The `soo` command. It calls the same functions as the DVC stages."""

from __future__ import annotations

from pathlib import Path

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
    from stages.scenarios import main

    run_entry(lambda: main(str(path)))


if __name__ == "__main__":
    app()
