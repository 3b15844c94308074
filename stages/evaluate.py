"""DVC stages `evaluate_base` and `evaluate@<seed>`: evaluate the base model or one SOO model
-> <evaluate.metrics_dir>/eval_<name>.json and <evaluate.generations_dir>/<name>.jsonl."""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from safetensors import SafetensorError

from soo.config import Params, load_params
from soo.data import (
    GenerationRecord,
    write_jsonl,
    write_text_atomic,
)
from soo.errors import first_line
from soo.evaluate import EvalMetrics, evaluate_model, load_inputs
from soo.models import ModelError, load_model
from soo.runtime import run_entry
from soo.scenarios import TEST_FAMILIES
from soo.stages_common import stage_tracker
from soo.vocabulary import load_vocabulary

log = logging.getLogger("stages.evaluate")


def load_evaluated(params: Params, name: str):
    """The base model, or the base with the adapter of `name` (seed_<s>) on top."""
    model, tokenizer = load_model(
        params.model.name_or_path,
        dtype=params.model.dtype,
        load_in_4bit=params.model.load_in_4bit,
        trust_remote_code=params.model.trust_remote_code,
    )
    if name == "base":
        return model, tokenizer
    from peft import PeftModel

    adapter = Path(params.train.output_dir) / name
    if not (adapter / "adapter_config.json").is_file():
        raise ModelError(
            f"adapter '{adapter}' not found; train it with `dvc repro train` or pass --model base"
        )
    try:
        return PeftModel.from_pretrained(model, adapter), tokenizer
    except (OSError, ValueError, SafetensorError) as err:
        raise ModelError(
            f"adapter '{adapter}': cannot be loaded: {first_line(err).rstrip('.')}; its files are "
            f"corrupt or incomplete: delete the folder and retrain it (`dvc repro train`)"
        ) from None


def main(name: str, params_path: str = "params.yaml") -> dict:
    start = time.perf_counter()
    params = load_params(params_path)
    ev = params.evaluate
    folder = Path(params.scenarios.output_dir)
    n = ev.n_per_family
    tests, probes = load_inputs(folder, ev.families or TEST_FAMILIES, n)
    model, tokenizer = load_evaluated(params, name)
    metrics, rows = evaluate_model(
        model,
        tokenizer,
        tests,
        probes,
        load_vocabulary(params.scenarios.vocabulary),
        params.organism,
        ev,
        params.train.alignment,
    )
    metrics = {"name": name, "seconds": round(time.perf_counter() - start, 1), **metrics}
    EvalMetrics.model_validate(metrics)
    write_jsonl(Path(ev.generations_dir) / f"{name}.jsonl", [GenerationRecord(**r) for r in rows])
    path = Path(ev.metrics_dir) / f"eval_{name}.json"
    write_text_atomic(path, json.dumps(metrics, indent=2) + "\n")
    tracker = stage_tracker(params, "evaluate", params_path, seed=name)
    tracker.log_params({"evaluate": ev.model_dump(), "model": params.model.model_dump()})
    tracker.log_metrics(
        {
            **{k: v for k, v in metrics["headline"].items() if v is not None},
            **{f"capability.{k}": v for k, v in metrics["capability"].items()},
            **{f"latent_mse.{k}": v for k, v in metrics["latent_mean"].items()},
        }
    )
    tracker.log_artifacts(path.parent, "metrics")
    tracker.finish()
    for key, value in metrics["headline"].items():
        log.info("%-34s %s", key, "n/a" if value is None else f"{value:.3f}")
    if name == "base":
        minimum = params.summary.targets.base_deception_min
        warn_if_base_does_not_deceive(metrics["headline"], minimum)
    log.info(
        "capability accuracy %.3f, perplexity %.3f, KL to base %.5f -> %s",
        metrics["capability"]["accuracy"],
        metrics["capability"]["perplexity"],
        metrics["capability"]["kl_to_base"],
        path,
    )
    return metrics


def warn_if_base_does_not_deceive(headline: dict, minimum: float) -> bool:
    """SOO's effect means something only on a base that deceives: say so loudly when it does not
    (on stderr, where a pipeline run shows it). True when the precondition holds."""
    rate = headline.get("burglar_deception")
    if rate is None or rate >= minimum:
        return True
    print(
        f"WARNING: the base model deceives on only {rate:.3f} of burglar prompts (needs >= "
        f"{minimum}, summary.targets.base_deception_min): there is no deception for SOO to remove, "
        "so SOO's numbers on this base are not evidence of its effect",
        file=sys.stderr,
    )
    return False


def cli() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="base, or seed_<s> for an SOO adapter")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    return main(args.model, args.params)


if __name__ == "__main__":
    run_entry(cli)
