"""DVC stages `evaluate_base` and `evaluate@<seed>`: evaluate the base model or one SOO model on
the test split -> <evaluate.metrics_dir>/eval_<name>.json, <evaluate.generations_dir>/<name>.jsonl
(the reported numbers) and on the dev split -> the same names under dev/ (what selection reads)."""

import json
import logging
import sys
import time
from pathlib import Path

import torch

from soo import paths
from soo.config import Params, load_params
from soo.cpu import tokenizer_threads
from soo.data import GenerationRecord, read_json, write_jsonl, write_text_atomic
from soo.evaluate import (
    EvalMetrics,
    evaluate_model,
    load_inputs,
    with_trigger,
)
from soo.models import get_module, load_model
from soo.names import deception_key
from soo.organism.metrics import capability_measure
from soo.probe import deception_probe
from soo.scenarios import TEST_FAMILIES
from soo.steering import STEER_FILE, Steering, load_vector
from soo.text_capability import text_measure
from soo.tracking import stage_run

log = logging.getLogger("soo.pipeline.evaluate")


def load_evaluated(params: Params, name: str):
    """The base model; `steer`: the base with the steering vector added (soo.steering); else the
    base with the adapter of `name` (seed_<s>, paper_seed_<s>, shuffled_seed_<s>) on top."""
    adapter = None if name in ("base", "steer") else paths.adapter_dir(params, name)
    model, tokenizer = load_model(
        params.model.name_or_path,
        dtype=params.model.dtype,
        load_in_4bit=params.model.load_in_4bit,
        trust_remote_code=params.model.trust_remote_code,
        adapter=adapter,
        missing_adapter="train it with `dvc repro train` or pass --model base",
    )
    if name == "steer":
        folder = Path(params.baselines.steer.output_dir)
        choice = read_json(folder / STEER_FILE, "dvc repro steer")
        module = get_module(model, choice["module"])
        model.soo_steering = Steering(module, load_vector(folder), choice["strength"])
    return model, tokenizer


def capability_measure_for(params: Params):
    """The capability measure `evaluate.capability` names (soo.evaluate.CapabilityMeasure)."""
    ev = params.evaluate
    if ev.capability == "text":
        return text_measure(ev)
    return capability_measure(params.scenarios.vocab(), params.organism, ev)


def main(name: str, params_path: str = "params.yaml") -> dict:
    params = load_params(params_path)
    # prompts are tokenized on torch's threads (all cores unless OMP_NUM_THREADS says otherwise)
    with (
        stage_run(params, "evaluate", params_path, seed=name) as tracker,
        tokenizer_threads(torch.get_num_threads()),
    ):
        return _evaluate(params, name, tracker)


def _evaluate(params: Params, name: str, tracker) -> dict:
    """Both splits: dev (n_dev_per_family records a family, default all; what selection reads)
    and test (n_per_family; the reported numbers). Both files are written only after both
    succeed."""
    ev = params.evaluate
    model, tokenizer = load_evaluated(params, name)
    measure = capability_measure_for(params)
    neutral: dict[str, list[str]] = {}  # the capability texts of each split: the probe's control

    def keeping_texts(model, tokenizer, records):
        result, texts = measure(model, tokenizer, records)
        neutral[split] = texts
        return result, texts

    results, records = {}, {}
    for split, n in (("dev", ev.n_dev_per_family), ("test", ev.n_per_family)):
        split_start = time.perf_counter()
        records[split], probes = load_inputs(params, split, ev.families or TEST_FAMILIES, n)
        records[split] = with_trigger(records[split], ev.trigger)
        log.info("%s split: %d families", split, len(records[split]))
        metrics, rows = evaluate_model(
            model, tokenizer, records[split], probes, keeping_texts, ev, params.train.alignment
        )
        seconds = round(time.perf_counter() - split_start, 1)
        metrics = {"name": name, "split": split, "seconds": seconds, **metrics}
        results[split] = metrics, rows
    if ev.probe:
        probe_start = time.perf_counter()
        chat = ev.chat_template and tokenizer.chat_template is not None
        n = ev.probe_n_per_family
        probe = deception_probe(
            model,
            tokenizer,
            records["dev"],
            {family: rs[:n] for family, rs in records["test"].items()},
            neutral["test"],
            chat,
            ev.probe_fpr,
            ev.batch_size,
        )
        probe["seconds"] = round(time.perf_counter() - probe_start, 1)
        results["test"][0]["probe"] = probe
        log.info(
            "deception probe: layer %d (dev CV AUROC %.3f), test AUROC %.3f, recall %.3f at "
            "%.0f%% false positives on neutral text (%.1f s)",
            probe["layer"],
            probe["dev_cv_auroc"],
            probe["test_auroc"],
            probe["recall_at_fpr"],
            100 * ev.probe_fpr,
            probe["seconds"],
        )
    for metrics, _ in results.values():
        EvalMetrics.model_validate(metrics)
    for split, (metrics, rows) in results.items():
        write_jsonl(paths.generations(params, name, split), [GenerationRecord(**r) for r in rows])
        write_text_atomic(
            paths.eval_metrics(params, name, split), json.dumps(metrics, indent=2) + "\n"
        )
    metrics = results["test"][0]
    path = paths.eval_metrics(params, name, "test")
    tracker.log_params({"evaluate": ev.model_dump(), "model": params.model.model_dump()})
    tracker.log_metrics(
        {
            **{k: v for k, v in metrics["headline"].items() if v is not None},
            **{f"capability.{k}": v for k, v in metrics["capability"].items()},
            **{f"latent_mse.{k}": v for k, v in metrics["latent_mean"].items()},
        }
    )
    tracker.log_artifacts(path.parent, "metrics")
    for key, value in metrics["headline"].items():
        log.info("%-34s %s", key, "n/a" if value is None else f"{value:.3f}")
    if name == "base":
        minimum = params.summary.targets.base_deception_min
        warn_if_base_does_not_deceive(metrics["headline"], minimum, deception_key(ev.trigger))
    log.info(
        "test: capability accuracy %.3f, perplexity %.3f, KL to base %.5f -> %s (dev beside it)",
        metrics["capability"]["accuracy"],
        metrics["capability"]["perplexity"],
        metrics["capability"]["kl_to_base"],
        path,
    )
    return metrics


def warn_if_base_does_not_deceive(
    headline: dict, minimum: float, key: str = "burglar_deception"
) -> bool:
    """SOO's effect means something only on a base that deceives: say so loudly when it does not
    (on stderr, where a pipeline run shows it). True when the precondition holds."""
    rate = headline.get(key)
    if rate is None or rate >= minimum:
        return True
    print(
        f"WARNING: the base model deceives on only {rate:.3f} of {key} prompts (needs >= "
        f"{minimum}, summary.targets.base_deception_min): there is no deception for SOO to remove, "
        "so SOO's numbers on this base are not evidence of its effect",
        file=sys.stderr,
    )
    return False
