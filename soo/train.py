"""SOO fine-tuning with Ray Train: the per-worker loop and the driver that runs it.

Each worker loads the base model, wraps it with LoRA (peft), and trains on its share of every
global batch (`DistributedSampler`: with W workers rank r takes every W-th pair of the same
shuffled order, so a global batch holds the same pairs for any W). Gradients are averaged by DDP
(`ray.train.torch.prepare_model`); each pair weighs the same in the loss, so W workers take the same
steps as one worker on the same global batch. Rank 0 reports a checkpoint (safetensors + JSON)
every `checkpoint_every` epochs; after a worker failure Ray restarts the workers (FailureConfig)
and they resume from the latest checkpoint, as does a rerun of the same run after a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler
from transformers import get_scheduler

from soo import ray_head
from soo.batching import collate_answers, collate_legacy, collate_pairs, mismatch_pairs
from soo.checkpointing import load_checkpoint, save_checkpoint
from soo.config import TrainParams
from soo.data import PairRecord, ScenarioRecord, TextRecord, atomic_folder, read_jsonl
from soo.errors import DataError, SooError, TrainError
from soo.evaluate import answer_prompts
from soo.objective import SooForward, add_lora, batch_loss
from soo.progress import Every
from soo.tracking import NullTracker, TrackerSpec, attach_tracker

log = logging.getLogger(__name__)

# Fault drills (tests, and `SOO_FAULT_KILL_AFTER_EPOCH` + `SOO_FAULT_MARKER` in the stage's
# environment): rank 0 kills itself (SIGKILL) once, after the checkpoint of that epoch, and leaves
# the marker file so the restarted worker carries on.
FAULT_ENV = "SOO_FAULT_KILL_AFTER_EPOCH"
FAULT_MARKER_ENV = "SOO_FAULT_MARKER"


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs, as plain data (paths absolute: workers run elsewhere)."""

    model: dict[str, Any]
    train: TrainParams  # validated once, where the params are loaded
    pairs_path: str
    seed: int
    neutral: list[str] = field(default_factory=list)
    tracker: TrackerSpec = field(default_factory=lambda: TrackerSpec("none"))
    fault: tuple[int, str] | None = None  # (epoch, marker file): a fault drill, see FAULT_ENV
    run_dir: str | None = None  # set by run_training: where Ray keeps this run

    def fingerprint(self) -> str:
        """Identifies the computation: a rerun resumes only a run with the same fingerprint."""
        ignore = {
            "num_workers",
            "use_gpu",
            "cpus_per_worker",
            "ray_address",
            "ray_keep_alive",
            "storage_path",
            "log_seconds",
            "max_failures",
            "output_dir",
            "metrics_dir",
            "seeds",
        }
        train = {k: v for k, v in self.train.model_dump().items() if k not in ignore}
        digest = hashlib.sha256(Path(self.pairs_path).read_bytes())
        blob = json.dumps([self.model, train, self.seed, self.neutral], sort_keys=True)
        digest.update(blob.encode())
        return digest.hexdigest()[:12]


@dataclass
class TrainResult:
    adapter_dir: Path
    summary: dict[str, Any]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker: runs on every worker process."""
    worker_start = time.time()  # wall clock: the stage compares it with its own marks
    import ray.train
    import ray.train.torch

    from soo.models import load_model
    from soo.runtime import configure

    configure()
    job: TrainJob = config["job"]
    train = job.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(job.seed)

    model, tokenizer = load_model(
        job.model["name_or_path"],
        dtype=job.model["dtype"],
        load_in_4bit=job.model["load_in_4bit"],
        trust_remote_code=job.model["trust_remote_code"],
        device=str(device),
    )
    peft_model = add_lora(model, train, job.seed)
    if train.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
        peft_model.enable_input_require_grads()
    peft_model.train()
    forward = SooForward(peft_model, train)
    ddp = ray.train.torch.prepare_model(forward, move_to_device=not job.model["load_in_4bit"])

    pairs = training_pairs(job, tokenizer)
    local_batch = train.batch_size // world
    micro = local_batch // train.grad_accum_steps
    sampler = DistributedSampler(pairs, num_replicas=world, rank=rank, shuffle=True, seed=job.seed)
    loader = DataLoader(pairs, batch_size=local_batch, sampler=sampler, collate_fn=list)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * train.epochs
    every = Every(train.log_seconds)
    optimizer, scheduler = make_optimizer(peft_model, train, total_steps)

    progress: dict[str, Any] = {"epoch": 0, "step": 0, "curve": [], "resumed_from_epoch": None}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            progress = load_checkpoint(Path(folder), peft_model, optimizer, scheduler)
        progress["resumed_from_epoch"] = progress["epoch"]
        log.info("resuming from the checkpoint of epoch %d", progress["epoch"])
    tracker = attach_tracker(job.tracker) if rank == 0 else NullTracker()
    neutral = job.neutral
    start = time.perf_counter()
    marks = {"worker_start": worker_start, "steps_start": time.time()}
    pairs_done = 0
    diagnostics: dict[str, float] = {}

    for epoch in range(progress["epoch"], train.epochs):
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch_seed(job.seed, epoch, rank))  # dropout: resumable
        for batch in loader:
            step = progress["step"] + 1
            diagnostics = train_step(
                ddp,
                peft_model,
                tokenizer,
                batch,
                neutral,
                train,
                device,
                step,
                optimizer,
                scheduler,
                micro,
            )
            pairs_done += len(batch) * world
            lr = scheduler.get_last_lr()[0]
            row = {"step": step, "epoch": epoch, "loss": diagnostics["loss"], "lr": lr}
            progress["curve"].append(row)
            progress["step"] = step
            tracker.log_metrics({**diagnostics, "lr": lr, "epoch": epoch}, step=step)
            if rank == 0 and (every() or step == total_steps):
                rate = pairs_done / (time.perf_counter() - start)
                log.info(
                    "step %d/%d | %s %.5f | lr %.1e | %.1f pairs/s",
                    step,
                    total_steps,
                    train.loss,
                    diagnostics["loss"],
                    lr,
                    rate,
                )
        progress["epoch"] = epoch + 1
        last = epoch + 1 == train.epochs
        metrics = {"epoch": epoch + 1, "step": progress["step"], "loss": diagnostics["loss"]}
        if last or (epoch + 1) % train.checkpoint_every == 0:
            with tempfile.TemporaryDirectory() as folder:
                ckpt = None
                if rank == 0:
                    if last:
                        progress["summary"] = _summary(
                            progress, diagnostics, start, pairs_done, world, device, train
                        )
                        progress["summary"]["marks"] = {**marks, "steps_end": time.time()}
                    save_checkpoint(Path(folder), peft_model, optimizer, scheduler, progress)
                    ckpt = ray.train.Checkpoint.from_directory(folder)
                ray.train.report(metrics, checkpoint=ckpt)
            if rank == 0 and job.fault is not None:
                _maybe_inject_fault(epoch + 1, *job.fault, run_dir=job.run_dir)
        # No report between checkpoints: each report is a barrier through the Ray Train
        # controller (about 1.5 s here), and step metrics go to the tracker anyway.
    forward.close()


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The global torch seed at the start of an epoch (dropout masks), so a run resumed from a
    checkpoint draws the masks it would have drawn."""
    return seed * 1_000_003 + epoch * 1009 + rank


def make_optimizer(peft_model, train: TrainParams, total_steps: int):
    """AdamW over the trainable (LoRA) parameters and the learning-rate schedule of `train`."""
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=train.lr, weight_decay=train.weight_decay)
    schedule = {"constant": "constant_with_warmup"}.get(train.schedule, train.schedule)
    return optimizer, get_scheduler(schedule, optimizer, train.warmup_steps, total_steps)


def train_step(
    ddp, peft_model, tokenizer, batch, neutral, train, device, step, optimizer, scheduler, micro
) -> dict[str, float]:
    """One optimizer step on `batch` (SOO pairs): the ONE training step of the project, used by
    the Ray worker, the in-process sweep and the throughput benchmark. Micro-batches of `micro`
    pairs accumulate gradients (synchronised across workers on the last), each with the next
    neutral texts of the capability term; then clipping, the optimizer and the schedule."""
    optimizer.zero_grad(set_to_none=True)
    chunks = [batch[i : i + micro] for i in range(0, len(batch), micro)]
    for index, chunk in enumerate(chunks):
        texts = neutral_slice(neutral, step, index, train.capability.batch_size)
        _, diagnostics = micro_step(
            ddp,
            peft_model,
            tokenizer,
            chunk,
            texts,
            train,
            device,
            # The released code summed its accumulated micro-batch losses (no division).
            weight=1.0 if _legacy(train) else len(chunk) / len(batch),
            sync=index == len(chunks) - 1,
        )
    if train.max_grad_norm:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
    optimizer.step()
    scheduler.step()
    return diagnostics


def micro_step(ddp, peft_model, tokenizer, chunk, neutral, train, device, weight, sync):
    """Forward and backward of one micro-batch; gradients sync across workers on the last."""
    if _legacy(train):
        batch = collate_legacy(tokenizer, chunk)
    elif train.loss == "sft":
        special = tokenizer.chat_template is None  # a chat template writes its own
        batch = collate_answers(tokenizer, chunk, neutral, add_special_tokens=special)
    else:
        batch = collate_pairs(tokenizer, chunk, neutral)
    batch = {k: v.to(device) for k, v in batch.items()}
    answer_mask = batch.pop("answer_mask", None)
    answers = None if answer_mask is None else (batch["input_ids"], answer_mask)
    base_logits = None
    if neutral:
        with torch.no_grad(), peft_model.disable_adapter():
            rows = slice(len(batch["input_ids"]) - len(neutral), None)  # the last rows
            base_logits = peft_model(
                input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows]
            ).logits
    no_sync = getattr(ddp, "no_sync", None)
    context = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
    with context:
        outputs = ddp(**batch)
        loss, diagnostics = batch_loss(
            outputs, batch["attention_mask"], len(chunk), train, base_logits, answers
        )
        (loss * weight).backward()
    return loss, diagnostics


def _legacy(train: TrainParams) -> bool:
    return train.loss == "legacy_logit_kl"


def capability_texts(train: TrainParams) -> list[str]:
    """The neutral texts of the capability term; none when its weight is 0."""
    if train.capability.weight <= 0:
        return []
    path = Path(train.capability.prompts)
    if not path.is_file():
        raise DataError(
            f"{path}: file not found; run `dvc repro neutral` to create it, or set "
            "train.capability.prompts to a JSONL of neutral texts"
        )
    return [r.text for r in read_jsonl(path, TextRecord)]


def neutral_slice(neutral: list[str], step: int, index: int, size: int) -> list[str]:
    if not neutral:
        return []
    start = ((step - 1) * 7 + index) * size
    return [neutral[(start + i) % len(neutral)] for i in range(size)]


def _summary(progress, diagnostics, start, pairs_done, world, device, train) -> dict[str, Any]:
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return {
        "steps": progress["step"],
        "epochs": train.epochs,
        "final_loss": diagnostics["loss"],
        "first_loss": progress["curve"][0]["loss"] if progress["curve"] else None,
        "final_diagnostics": diagnostics,
        "seconds": round(seconds, 2),
        "pairs_per_second": round(pairs_done / seconds, 2) if seconds else None,
        "num_workers": world,
        "device": str(device),
        "peak_gpu_bytes": peak,
        "skipped_steps": 0,  # fp32/bf16: no loss scaler, no skipped steps
        "resumed_from_epoch": progress.get("resumed_from_epoch"),
    }


def _maybe_inject_fault(epoch: int, target: int, marker: str, run_dir: str | None) -> None:
    if epoch != target or Path(marker).exists():
        return
    Path(marker).write_text(f"killed after epoch {epoch}\n")
    _wait_until_registered(run_dir, epoch)
    log.warning("fault drill: killing this worker after the checkpoint of epoch %d", epoch)
    os.kill(os.getpid(), signal.SIGKILL)


def _wait_until_registered(run_dir: str | None, epoch: int, timeout: float = 60.0) -> None:
    """Wait until the Ray Train controller has recorded the checkpoint of `epoch` in its snapshot
    file: a worker killed before that loses the checkpoint (the report was still queued)."""
    snapshot = Path(run_dir or "") / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run_dir and snapshot.is_file() and _mentions_epoch(snapshot.read_text(), epoch):
            return
        time.sleep(0.2)
    log.warning(
        "fault drill: checkpoint of epoch %d not seen in %s after %.0f s", epoch, snapshot, timeout
    )


def _mentions_epoch(text: str, epoch: int) -> bool:
    try:
        tree = json.loads(text)
    except json.JSONDecodeError:
        return False
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("epoch") == epoch:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and node.startswith(("{", "[")):
            stack.append(_loads_or_none(node))
    return False


def _loads_or_none(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def fault_from_env() -> tuple[int, str] | None:
    """A fault drill requested through the environment, if any."""
    epoch, marker = os.environ.get(FAULT_ENV), os.environ.get(FAULT_MARKER_ENV)
    if not epoch:
        return None
    if not marker:
        raise TrainError(f"{FAULT_ENV} is set: also set {FAULT_MARKER_ENV} to a file path")
    return int(epoch), str(Path(marker).resolve())


def run_training(job: TrainJob, storage_path: Path) -> TrainResult:
    """Run `job` on Ray Train and return the final adapter folder (inside the Ray run)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    train = job.train
    name = f"soo-seed{job.seed}-{job.fingerprint()}"
    job = replace(job, run_dir=str(Path(storage_path) / name))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job},
        scaling_config=ray.train.ScalingConfig(
            num_workers=train.num_workers,
            use_gpu=train.use_gpu,
            resources_per_worker=_resources(train),
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        with _ray_session(train) as how:
            log.info("seed %d: Ray %s", job.seed, how)
            result = trainer.fit()
    except SooError:
        raise
    except Exception as err:  # noqa: BLE001 - Ray wraps worker errors in its own types
        raise TrainError(
            f"training seed {job.seed} failed: {_root_cause(err)}; the latest checkpoint is kept "
            f"in {storage_path / name} and a rerun with the same params resumes from it"
        ) from None
    if result.checkpoint is None:
        raise TrainError(f"training seed {job.seed} finished without a checkpoint")
    folder = Path(result.checkpoint.path)
    meta = json.loads((folder / "trainer_state.json").read_text())
    return TrainResult(
        folder,
        {**meta["progress"]["summary"], "run_name": name, "curve": meta["progress"]["curve"]},
    )


def _resources(train: TrainParams) -> dict[str, float]:
    return {"CPU": train.cpus_per_worker, **({"GPU": 1} if train.use_gpu else {})}


# Environment variables a stage's training workers must see as the stage does.
PROPAGATED_ENV = ("HF_", "MLFLOW_", "SOO_", "TRANSFORMERS_", "TOKENIZERS_", "CUDA_", "OMP_", "MKL_")


# Ray Train's PlacementGroupCleaner asks Ray's state API every second whether the run's controller
# is alive. A local Ray here has no dashboard, so no state API: it then logs a warning each
# second of training ("Failed to query Ray Train Controller actor state"), hundreds of lines a
# stage. Its one job, removing the placement group of a controller that died, is moot on a Ray
# that ends with the stage or the keeper. A cluster (with its dashboard) keeps the warning.
QUIET_HOOK = "soo.train.quiet_local_ray_worker"
QUIETED_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_local_ray_worker() -> None:
    """Ray worker process setup hook on a local Ray: silence QUIETED_LOGGERS below errors."""
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def _ray_session(train: TrainParams):
    """Connected to Ray for the body: the cluster at ray_address / RAY_ADDRESS; else the shared
    local Ray (soo.ray_head) when train.ray_keep_alive > 0; else a local Ray of this process.
    Yields how: "joined", "shared (started)", "shared" or "private"."""
    import ray

    if ray.is_initialized():  # a caller (a sweep, a test) already holds a session
        yield "existing"
        return
    address = train.ray_address or os.environ.get("RAY_ADDRESS") or None
    shared = not address and train.ray_keep_alive > 0
    if address:
        check_ray_address(address, "train.ray_address" if train.ray_address else "RAY_ADDRESS")
        how, extra = "joined", {}
    elif shared:
        address, started = ray_head.acquire(train.ray_keep_alive)
        how = "shared (started)" if started else "shared"
        # The shared Ray's workers inherit the environment of the stage that started it: this
        # stage's own settings travel with its job.
        env = {k: v for k, v in os.environ.items() if k.startswith(PROPAGATED_ENV)}
        extra = {"runtime_env": {"env_vars": env, "worker_process_setup_hook": QUIET_HOOK}}
    else:
        how = "private"
        extra = {
            "_node_ip_address": "127.0.0.1",  # a local Ray binds loopback
            "runtime_env": {"worker_process_setup_hook": QUIET_HOOK},
        }
    try:
        ray.init(
            # "local": a new Ray, never one found in /tmp/ray (a `ray start` left behind)
            address=address or "local",
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
            configure_logging=True,
            **extra,
        )
        yield how
    finally:
        ray.shutdown()  # a driver of a running cluster only disconnects
        if shared:
            ray_head.release()


def check_ray_address(address: str, key: str, timeout: float = 3.0) -> None:
    """Fail in seconds, naming the setting, when nothing listens at a cluster address (Ray itself
    retries its GCS connection for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise TrainError(
            f"{key}: {address!r} is not a Ray address; use host:port (e.g. 10.0.0.5:6379), "
            "ray://host:10001, or null for a local Ray"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise TrainError(
            f"{key}: no Ray cluster answers at {address} ({err.strerror or err}); start one "
            "with `ray start --head` or fix the address (null starts a local Ray)"
        ) from None


def _root_cause(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):  # the worker's own exception is usually last
        if "Error" in line or "error" in line:
            return line[:300]
    return (lines[-1] if lines else type(err).__name__)[:300]


def export_adapter(result: TrainResult, output_dir: Path) -> Path:
    """Copy the final peft adapter into `output_dir` atomically (a failure keeps the old one)."""
    with atomic_folder(output_dir) as staging:
        for name in ("adapter_model.safetensors", "README.md"):
            source = result.adapter_dir / name
            if source.exists():
                shutil.copy2(source, staging / name)
        # peft writes target_modules from a set, in an order that changes between processes:
        # sort it so the same training gives the same bytes (and the same DVC hash).
        config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return output_dir


def training_pairs(job: TrainJob, tokenizer) -> list[PairRecord] | list[tuple[str, str]]:
    """The pairs a run trains on: the file's, or with train.pairs `shuffled` each self prompt with
    another pair's other prompt (soo.batching.mismatch_pairs, seeded by the run's seed); with
    loss sft, (prompt, honest answer) examples of the train-split scenarios in the file."""
    if job.train.loss == "sft":
        return answer_examples(tokenizer, read_jsonl(job.pairs_path, ScenarioRecord))
    pairs = read_jsonl(job.pairs_path, PairRecord)
    if job.train.pairs == "matched":
        return pairs
    try:
        return mismatch_pairs(tokenizer, pairs, job.seed, job.train.alignment)
    except ValueError as err:
        raise TrainError(f"train.pairs shuffled: {err}") from None


def answer_examples(tokenizer, records: list[ScenarioRecord]) -> list[tuple[str, str]]:
    """(prompt as the model sees it + the answer's opening, " <room>.") a record: the reply the
    evaluation's forced choice scores, with the record's target room (default: the honest one)."""
    prompts = answer_prompts(tokenizer, records, chat=tokenizer.chat_template is not None)
    return [(p, f" {r.target or r.honest_answer}.") for p, r in zip(prompts, records, strict=True)]


def preflight(job: TrainJob) -> None:
    """Check what would otherwise fail inside the workers, before Ray starts: the model folder,
    the module and layer (on a weightless copy of the model), the LoRA targets, and the pairs."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from soo.batching import unequal_pairs
    from soo.models import check_source, load_failure

    train = job.train
    source = check_source(job.model["name_or_path"])
    trust = job.model["trust_remote_code"]
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust)
    except (OSError, ValueError, KeyError) as err:
        raise load_failure(job.model["name_or_path"], err) from None
    add_lora(skeleton, train, job.seed)
    SooForward(skeleton, train).close()  # resolves train.module at train.layer, or names choices
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    pairs = training_pairs(job, tokenizer)
    if train.alignment == "full" and train.loss != "sft":
        unequal = unequal_pairs(tokenizer, pairs)
        if unequal:
            raise TrainError(
                f"{job.pairs_path}: {len(unequal)} pairs (first: {unequal[0]}) have self and "
                "other prompts of different token lengths under this tokenizer; train.alignment "
                "'full' needs equal lengths: use train.alignment: last or mean"
            )
    if len(pairs) < train.batch_size:
        raise TrainError(
            f"{job.pairs_path}: {len(pairs)} pairs is fewer than train.batch_size "
            f"({train.batch_size}); lower train.batch_size or add training items"
        )
