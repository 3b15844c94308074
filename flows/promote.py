"""The `soo-promote` flow: the gated promotion of the registry's candidate (see soo.registry)."""

from __future__ import annotations

from prefect import flow, task

from soo.pipeline.promote import main as promote_main


@task(retries=2, retry_delay_seconds=10)
def promote_candidate(params_path: str) -> dict:
    return promote_main(params_path)


@flow(name="soo-promote", log_prints=True)
def soo_promote(params_path: str = "params.yaml") -> dict:
    decision = promote_candidate(params_path)
    print(f"promoted: {decision['promoted']}; champion: version {decision['champion']}")
    return decision


if __name__ == "__main__":
    soo_promote()
