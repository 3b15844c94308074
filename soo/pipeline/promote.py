"""DVC stage `promote` (and `soo promote`): move `champion` to the candidate when it passes every
gate in `promote:` and beats the current champion -> metrics/promotion.json. A refused promotion
is an outcome, not an error: the champion stays and the failed gates are printed."""

import json
import logging

from soo import paths
from soo.config import load_params
from soo.data import write_text_atomic
from soo.registry import CHAMPION, alias_version, promote
from soo.tracking import default_uri, stage_run

log = logging.getLogger("soo.pipeline.promote")


def main(params_path: str = "params.yaml", version: str | None = None) -> dict:
    params = load_params(params_path)
    with stage_run(params, "promote", params_path) as tracker:
        return _promote(params, version, tracker)


def _promote(params, version: str | None, tracker) -> dict:
    uri = params.tracking.uri or default_uri()
    name = params.registry.name
    decision = promote(uri, name, params.promote, version)
    out = {
        "name": name,
        "version": decision.version,
        "promoted": decision.promote,
        "champion": alias_version(uri, name, CHAMPION),
        "failed_gates": decision.failed,
        "passed_gates": decision.passed,
    }
    write_text_atomic(paths.promotion(params), json.dumps(out, indent=2) + "\n")
    tracker.set_tags(
        {
            "promoted": str(decision.promote),
            "version": str(decision.version),
            "champion": str(out["champion"]),
        }
    )
    print(decision.describe())
    for gate in decision.failed:
        print(f"  FAILED {gate}")
    return out
