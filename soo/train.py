"""SOO fine-tuning: the per-worker loop that Ray Train runs (the driver is soo.ray_train).

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
import json
import logging
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler
from transformers import get_scheduler

from soo.batching import collate_answers, collate_legacy, collate_pairs, mismatch_pairs
from soo.checkpointing import (
    latest_checkpoint,
    load_checkpoint,
    local_checkpoint_dir,
    prune_local_checkpoints,
    save_checkpoint,
)
from soo.config import TrainParams
from soo.data import PairRecord, ScenarioRecord, TextRecord, atomic_folder, read_jsonl
from soo.errors import DataError, TrainError
from soo.evaluate import answer_prompts
from soo.objective import SooForward, add_lora, batch_loss
from soo.progress import Every
from soo.tracking import NullTracker, attach_tracker
from soo.train_job import TrainJob, check_local_mode

log = logging.getLogger(__name__)


def worker_loop(config: dict[str, Any], worker_start: float) -> None:
    """The Ray Train worker loop, on every worker process, or in the stage's process in Ray
    Train's local mode (entered through `soo.ray_train.train_loop_per_worker`); `worker_start` is
    the wall clock when it began."""
    from soo.runtime import configure

    configure()
    job: TrainJob = config["job"]
    if job.train.num_workers:  # a Ray Train worker process
        return _loop(job, worker_start)
    # Ray Train's local mode: the stage's own process, with the threads a worker would get (Ray
    # sets a worker's threads to its CPUs), restored afterwards
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(job.train.cpus_per_worker)))
    try:
        return _loop(job, worker_start)
    finally:
        torch.set_num_threads(threads)


def _loop(job: TrainJob, worker_start: float) -> None:
    import ray.train
    import ray.train.torch

    from soo.models import load_model

    train = job.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if train.num_workers:
        device = ray.train.torch.get_device()
    else:  # local mode would take a GPU whenever there is one; train.use_gpu decides here
        device = torch.device("cuda", 0) if train.use_gpu else torch.device("cpu")
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
    if checkpoint is None and (found := latest_checkpoint(job.run_dir)):
        # local mode keeps its own checkpoints; also a run begun in the other mode
        checkpoint = ray.train.Checkpoint.from_directory(found)
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
            if rank == 0 and last:
                progress["summary"] = _summary(
                    progress, diagnostics, start, pairs_done, world, device, train
                )
                progress["summary"]["marks"] = {**marks, "steps_end": time.time()}

            def save(folder: Path) -> None:
                save_checkpoint(folder, peft_model, optimizer, scheduler, progress)

            report_checkpoint(metrics, save if rank == 0 else None, job, epoch + 1)
            if rank == 0 and job.fault is not None:
                _maybe_inject_fault(epoch + 1, *job.fault, run_dir=job.run_dir)
        # No report between checkpoints: each report is a barrier through the Ray Train
        # controller (about 1.5 s here), and step metrics go to the tracker anyway.
    if progress["resumed_from_epoch"] == train.epochs:  # a rerun of a finished run: report it
        done = {"epoch": train.epochs, "step": progress["step"]}
        ray.train.report(done, checkpoint=checkpoint if rank == 0 else None)
    forward.close()


def report_checkpoint(metrics, save, job: TrainJob, epoch: int) -> None:
    """`ray.train.report` with the checkpoint `save(folder)` writes (None: this rank reports
    metrics only). Ray Train copies the folder into the run's storage; in its local mode it keeps
    only the object, so the folder is written into the run's own folder (the latest two kept)."""
    import ray.train

    if save is None:
        ray.train.report(metrics, checkpoint=None)
    elif job.train.num_workers == 0:
        folder = local_checkpoint_dir(job.run_dir, epoch)
        with atomic_folder(folder) as staging:
            save(staging)
        prune_local_checkpoints(job.run_dir)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
    else:
        with tempfile.TemporaryDirectory() as folder:
            save(Path(folder))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


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
        "num_workers": world,  # processes: 1 in Ray Train's local mode
        "ray_train_mode": "distributed" if train.num_workers else "local",
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

    check_local_mode(job)
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
