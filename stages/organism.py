"""DVC stage `organism`: build the model organism -> models/organism/, metrics/organism.json."""

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from soo.config import load_params
from soo.corpus import CorpusGenerator, held_out_triples
from soo.data import ScenarioRecord, read_jsonl, write_text_atomic
from soo.organism import build_organism, corpus_spec, save_organism
from soo.organism_metrics import OrganismMetrics, answer_probe, measure_organism, targets
from soo.runtime import run_entry
from soo.scenarios import TEST_FAMILIES, scenario_record
from soo.stages_common import stage_tracker
from soo.vocabulary import load_vocabulary

log = logging.getLogger("stages.organism")


def main(params_path: str = "params.yaml") -> dict:
    start = time.perf_counter()
    params = load_params(params_path)
    org = params.organism
    vocab = load_vocabulary(params.scenarios.vocabulary)
    folder = Path(params.scenarios.output_dir)
    tests = {f: read_jsonl(folder / f"{f}.jsonl", ScenarioRecord) for f in TEST_FAMILIES}
    held_out = held_out_triples(r for records in tests.values() for r in records)
    # Probes during training use validation scenes: neither test records nor held-out triples.
    scenes = CorpusGenerator(vocab, replace(corpus_spec(org), seed=org.seed + 1), held_out)
    validation = [scenario_record("burglar", i, scenes.scene(), vocab) for i in range(96)]
    organism = build_organism(
        vocab,
        org,
        held_out,
        probe_factory=lambda tok: answer_probe(tok, validation),
        probe_every=200,
    )
    save_organism(organism.model, organism.tokenizer, org.output_dir)
    metrics = measure_organism(organism.model, organism.tokenizer, tests, vocab, org)
    metrics = {
        "variant": org.variant,
        "build_seconds": round(time.perf_counter() - start, 1),
        "train": {
            "steps": organism.result.steps,
            "seconds": round(organism.result.seconds, 1),
            "final_loss": round(organism.result.final_loss, 4),
            "corpus_documents": organism.n_docs,
            "corpus_tokens": organism.n_tokens,
            "parameters": sum(p.numel() for p in organism.model.parameters()),
            "probes": organism.result.history,
        },
        **metrics,
    }
    metrics["targets"] = targets(metrics, org.variant)
    OrganismMetrics.model_validate(metrics)
    write_text_atomic(Path(org.metrics_path), json.dumps(metrics, indent=2) + "\n")
    tracker = stage_tracker(params, "organism", params_path)
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
    tracker.finish()
    for row in metrics["targets"]:
        log.info("%-4s %-45s %.3f", "ok" if row["met"] else "MISS", row["target"], row["value"])
    return metrics


if __name__ == "__main__":
    run_entry(main)
