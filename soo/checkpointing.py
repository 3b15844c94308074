"""Training checkpoints without pickle: the peft adapter and optimizer tensors as safetensors,
everything else (optimizer groups, schedule, progress) as JSON."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

ADAPTER = "adapter_model.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "trainer_state.json"
LOCAL_PREFIX = "checkpoint_epoch_"


def save_checkpoint(
    folder: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: dict[str, Any],
) -> None:
    """Write adapter (peft's own format), optimizer and progress into `folder`."""
    model.save_pretrained(folder, safe_serialization=True)
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    save_file(tensors, str(folder / OPTIMIZER))
    meta = {
        "progress": progress,
        "param_groups": opt["param_groups"],
        "optimizer_scalars": scalars,
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
    }
    (folder / STATE).write_text(json.dumps(meta, indent=1))


def load_checkpoint(
    folder: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote; returns the saved progress."""
    device = next(p.device for p in model.parameters() if p.requires_grad)
    set_peft_model_state_dict(model, load_file(str(folder / ADAPTER), device=str(device)))
    meta = json.loads((folder / STATE).read_text())
    state: dict[int, dict[str, Any]] = {}
    for key, value in load_file(str(folder / OPTIMIZER), device=str(device)).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["optimizer_scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(groups)})
    return meta["progress"]


# Ray Train's local mode (train.num_workers 0) keeps a reported checkpoint as an object only: it
# copies nothing into the run's storage and `get_checkpoint()` starts empty. There the loop keeps
# its checkpoints in the run's folder itself, as Ray Train would (the latest two), so a rerun of
# the same run resumes from them.
def local_checkpoint_dir(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / f"{LOCAL_PREFIX}{epoch:06d}"


def latest_checkpoint(run_dir: str | Path | None) -> Path | None:
    """The checkpoint of `run_dir` with the most epochs done, in either layout: the loop's own
    (local mode) or Ray Train's (`checkpoint_<time>`), so a run begun in one mode resumes in the
    other. Folders are complete: both are written aside and renamed into place."""
    if not run_dir or not Path(run_dir).is_dir():
        return None
    done = []
    for folder in Path(run_dir).glob("checkpoint_*"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            done.append((json.loads((folder / STATE).read_text())["progress"]["epoch"], folder))
    return max(done)[1] if done else None


def prune_local_checkpoints(run_dir: str | Path, keep: int = 2) -> None:
    for old in sorted(Path(run_dir).glob(f"{LOCAL_PREFIX}*[0-9]"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
