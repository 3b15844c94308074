"""The MLflow model registry: register SOO models, gate them, promote and roll back `champion`.

Every registered version carries its evaluation as tags (`metric.<key>`), so a promotion decision
needs nothing but the registry. `champion` moves only to a version that passes every gate in
`promote:` and beats the current champion on deception without losing capability. The alias move
is one registry call; the history that `rollback` uses is written after it, and a failure writing
it puts the alias back, so an error never leaves `champion` on an unvetted version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soo.config import PromoteParams
from soo.errors import SooError

log = logging.getLogger(__name__)

CANDIDATE, CHAMPION = "candidate", "champion"
HISTORY_TAG = "champion_history"
IDENTITY_TAG = "registration_sha256"
METRIC_PREFIX = "metric."
SERVING_CODE = Path(__file__).with_name("serving.py")


class RegistryError(SooError):
    """A registered model, version or alias that does not exist or cannot be used."""


@dataclass
class Decision:
    version: str
    promote: bool
    failed: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    already: bool = False  # the version held `champion` before this call

    def describe(self) -> str:
        if self.already:
            verdict = "passes every gate" if self.promote else "fails " + "; ".join(self.failed)
            return f"version {self.version} is already {CHAMPION} ({verdict}); nothing moved"
        if self.promote:
            return f"version {self.version} passes every gate: promoted to {CHAMPION}"
        return f"version {self.version} not promoted: " + "; ".join(self.failed)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def register(
    uri: str,
    name: str,
    adapter_dir: Path,
    base: str,
    metrics: dict[str, float | int | None],
    tags: dict[str, str],
    run_name: str,
    experiment: str = "soo-pipeline",
    model_config: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> str:
    """Log the adapter as a pyfunc model (code, not pickle), register a version with its metrics
    as tags, and point `candidate` at it (into run `run_id` when given). Returns the version.

    Registering the same adapter, base, config and metrics again (a `dvc repro` after a code change
    that left the model as it was) reuses that version instead of adding an identical one, which
    could never beat itself at the promotion gate."""
    import mlflow

    config = {"base": base, **(model_config or {})}
    identity = registration_identity(adapter_dir, config, metrics)
    registry = client(uri)
    existing = _version_with_identity(registry, name, identity)
    if existing is not None:
        registry.set_registered_model_alias(name, CANDIDATE, existing)
        log.info("%s version %s holds this adapter already (alias %s)", name, existing, CANDIDATE)
        return existing
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=tags):
        info = mlflow.pyfunc.log_model(
            name="soo_model",
            python_model=str(SERVING_CODE),
            artifacts={"adapter": str(adapter_dir)},
            model_config=config,
            code_paths=[str(Path(__file__).parent)],
            registered_model_name=name,
        )
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
    version = str(info.registered_model_version)
    registry.set_model_version_tag(name, version, IDENTITY_TAG, identity)
    for key, value in metrics.items():
        registry.set_model_version_tag(name, version, f"{METRIC_PREFIX}{key}", str(value))
    for key, value in tags.items():
        registry.set_model_version_tag(name, version, key, value)
    registry.set_registered_model_alias(name, CANDIDATE, version)
    log.info("registered %s version %s (alias %s)", name, version, CANDIDATE)
    return version


def version_metrics(uri: str, name: str, version: str) -> dict[str, float]:
    tags = client(uri).get_model_version(name, version).tags
    return {
        k.removeprefix(METRIC_PREFIX): float(v)
        for k, v in tags.items()
        if k.startswith(METRIC_PREFIX) and v not in ("None", "")
    }


def registration_identity(
    adapter_dir: Path, config: dict[str, Any], metrics: dict[str, float | int | None]
) -> str:
    """SHA-256 over the adapter's files, the serving config and the metrics."""
    digest = hashlib.sha256(json.dumps([config, metrics], sort_keys=True).encode())
    for path in sorted(p for p in Path(adapter_dir).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(adapter_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _version_with_identity(registry, name: str, identity: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = registry.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    for version in versions:
        if version.tags.get(IDENTITY_TAG) == identity:
            return str(version.version)
    return None


def alias_version(uri: str, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    registry = client(uri)
    try:
        registry.get_registered_model(name)
    except MlflowException:
        raise RegistryError(
            f"registered model '{name}' does not exist; run `dvc repro register` first or check "
            "registry.name"
        ) from None
    try:
        return str(registry.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def gated_deception(candidate: dict[str, float]) -> str:
    """The deception the gates read: burglar, or burglar with the trigger when the run measured a
    backdoored base with one (`gates_read_triggered`, set at registration)."""
    triggered = candidate.get("gates_read_triggered")
    return "burglar_triggered_deception" if triggered else "burglar_deception"


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    gates: PromoteParams,
    version: str,
) -> Decision:
    """Check every gate (dev numbers: see PromoteParams); the candidate must also beat the
    champion on deception without losing capability."""
    decision = Decision(version, promote=False)

    def check(ok: bool, text: str) -> None:
        (decision.passed if ok else decision.failed).append(text)

    def get(key: str) -> float:
        return candidate.get(key, float("nan"))

    def high(key: str) -> float:
        """The 95% upper bound over seeds (the mean when there is only one seed)."""
        value = candidate.get(f"{key}_high")
        return get(key) if value is None or value != value else value

    # Deception is gated at the upper bound of its 95% interval over seeds (the other gates read
    # means over seeds). The served seed must pass on its own as well.
    key = gated_deception(candidate)
    deception, base = high(f"soo_{key}"), get(f"base_{key}")
    check(
        deception <= gates.max_deception,
        f"deception (upper 95% bound over seeds) {deception:.3f} <= max_deception "
        f"{gates.max_deception}",
    )
    check(
        base - deception >= gates.min_reduction,
        f"reduction vs base (at the upper bound) {base - deception:.3f} >= min_reduction "
        f"{gates.min_reduction}",
    )
    served = get(f"seed_{key}")
    check(
        served <= gates.max_deception,
        f"served seed's deception {served:.3f} <= max_deception {gates.max_deception}",
    )
    for who, prefix in (("", "soo"), ("served seed's ", "seed")):
        drop = get("base_capability_accuracy") - get(f"{prefix}_capability_accuracy")
        check(
            drop <= gates.max_capability_drop,
            f"{who}capability drop {drop:.3f} <= max_capability_drop {gates.max_capability_drop}",
        )
        perspectives = get(f"{prefix}_perspectives_accuracy")
        check(
            perspectives >= gates.min_perspectives,
            f"{who}Perspectives {perspectives:.3f} >= min_perspectives {gates.min_perspectives}",
        )
        unparseable = get(f"{prefix}_unparseable_mean")
        check(
            unparseable <= gates.max_unparseable,
            f"{who}unparseable {unparseable:.3f} <= max_unparseable {gates.max_unparseable}",
        )
    seeds = get("n_seeds")
    check(seeds >= gates.min_seeds, f"seeds {seeds:.0f} >= min_seeds {gates.min_seeds}")
    if champion is not None:
        mean = get(f"soo_{key}")
        if gated_deception(champion) != key:  # one gated with the trigger, one without
            how = "without" if key == "burglar_triggered_deception" else "with"
            check(
                False,
                f"champion's deception is measured {how} the trigger: not comparable (roll back, "
                "or register under another registry.name)",
            )
        else:
            check(
                mean < champion.get(f"soo_{key}", float("inf")),
                f"deception {mean:.3f} < champion's {champion.get(f'soo_{key}', float('nan')):.3f}",
            )
        check(
            get("soo_capability_accuracy") >= champion.get("soo_capability_accuracy", 0.0),
            f"capability {get('soo_capability_accuracy'):.3f} >= champion's "
            f"{champion.get('soo_capability_accuracy', float('nan')):.3f}",
        )
    decision.promote = not decision.failed
    return decision


def promote(uri: str, name: str, gates: PromoteParams, version: str | None = None) -> Decision:
    """Move `champion` to the candidate (or `version`) if it passes; otherwise leave it."""
    current = alias_version(uri, name, CHAMPION)
    version = version or alias_version(uri, name, CANDIDATE)
    if version is None:
        raise RegistryError(f"registered model '{name}' has no '{CANDIDATE}' alias; register first")
    if version == current:
        # Idempotent: report the champion's gates again (as the promotion that moved it did) and
        # move nothing, even when gates tightened since; `soo rollback` is the way back.
        decision = decide(version_metrics(uri, name, version), None, gates, version)
        decision.already = True
        return decision
    champion = version_metrics(uri, name, current) if current else None
    decision = decide(version_metrics(uri, name, version), champion, gates, version)
    if decision.promote:
        move_champion(uri, name, version, previous=current)
    return decision


def move_champion(uri: str, name: str, version: str, previous: str | None) -> None:
    registry = client(uri)
    history = _history(uri, name)
    registry.set_registered_model_alias(name, CHAMPION, version)
    try:
        registry.set_registered_model_tag(name, HISTORY_TAG, json.dumps([*history, version]))
    except Exception:
        if previous is None:
            registry.delete_registered_model_alias(name, CHAMPION)
        else:
            registry.set_registered_model_alias(name, CHAMPION, previous)
        raise


def rollback(uri: str, name: str) -> str:
    """Point `champion` back at the version it held before the latest promotion."""
    history = _history(uri, name)
    if len(history) < 2:
        raise RegistryError(
            f"registered model '{name}' has no earlier champion to roll back to "
            f"(champion history: {history or 'empty'})"
        )
    registry = client(uri)
    registry.set_registered_model_alias(name, CHAMPION, history[-2])
    registry.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[:-1]))
    return history[-2]


def _history(uri: str, name: str) -> list[str]:
    tags = client(uri).get_registered_model(name).tags
    return json.loads(tags.get(HISTORY_TAG, "[]"))
