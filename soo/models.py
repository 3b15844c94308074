"""The one model loader (base model + tokenizer, optional adapter) and the module resolver."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from soo.errors import SooError, first_line

log = logging.getLogger(__name__)

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Prefixes under which peft and quantization wrappers put the original module names.
_WRAPPER_PREFIXES = ("", "base_model.model.", "module.", "module.base_model.model.")


class ModelError(SooError):
    """A model path, id, option or module name that cannot be used."""


def load_model(
    name_or_path: str,
    *,
    dtype: Dtype = "auto",
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
    device: str | None = None,
    adapter: str | Path | None = None,
    missing_adapter: str = "train it with `dvc repro train`",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local folder or a hub id, with the peft adapter
    folder `adapter` on top when given (`missing_adapter` says what to do when it is absent).

    dtype "auto" is float32 on CPU and bfloat16 on GPU. A hub id honours HF_HUB_OFFLINE: offline,
    only what is already in the local cache loads.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    source = check_source(name_or_path)
    if load_in_4bit and not device.startswith("cuda"):
        raise ModelError(
            f"model.load_in_4bit: 4-bit loading (bitsandbytes) needs a GPU, this run is on "
            f"{device}; set model.load_in_4bit: false"
        )
    if trust_remote_code:
        log.warning("trust_remote_code is ON for %s: its repository code will run", name_or_path)
    torch_dtype = _DTYPES.get(dtype) or (
        torch.bfloat16 if device.startswith("cuda") else torch.float32
    )
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype
        )
        kwargs["device_map"] = {"": device}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError, SafetensorError) as err:
        # SafetensorError: a corrupt or truncated weights file ("invalid header length")
        raise load_failure(name_or_path, err) from None
    if not load_in_4bit:
        model.to(device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    if adapter is not None:
        model = _with_adapter(model, Path(adapter), missing_adapter)
    return model, tokenizer


def _with_adapter(model: PreTrainedModel, adapter: Path, missing: str) -> PreTrainedModel:
    """The project's only PeftModel.from_pretrained: an inference adapter on a loaded base."""
    from peft import PeftModel

    if not (adapter / "adapter_config.json").is_file():
        raise ModelError(f"adapter '{adapter}' not found; {missing}")
    try:
        return PeftModel.from_pretrained(model, adapter).eval()
    except (OSError, ValueError, SafetensorError) as err:
        raise ModelError(
            f"adapter '{adapter}': cannot be loaded: {first_line(err).rstrip('.')}; its files are "
            f"corrupt or incomplete: delete the folder and retrain it (`dvc repro train`)"
        ) from None


def load_failure(name_or_path: str, err: Exception) -> ModelError:
    """The error for a model that exists (folder or hub id) but does not load, with the fix."""
    first = first_line(err).rstrip(".")
    if isinstance(err, SafetensorError):
        fix = (
            "its safetensors weights file is corrupt or truncated; rebuild or restore the model "
            "(`dvc repro organism`, `dvc checkout`, or download it again)"
        )
    elif Path(name_or_path).is_dir():
        fix = (
            "check that the folder holds a causal LM checkpoint (config.json, safetensors "
            "weights, tokenizer) of an architecture this transformers version supports"
        )
    else:
        fix = (
            f"download it where there is network access (`hf download {name_or_path} "
            "--local-dir models/<name>`) and set model.name_or_path to that folder"
        )
    return ModelError(f"model '{name_or_path}': cannot be loaded: {first}; {fix}")


def check_source(name_or_path: str) -> str:
    path = Path(name_or_path)
    looks_local = path.is_absolute() or name_or_path.startswith(".") or path.exists()
    looks_hub = re.fullmatch(r"[\w.-]+/[\w.-]+", name_or_path) is not None
    if path.is_dir():
        if not (path / "config.json").is_file():
            found = sorted(p.name for p in path.iterdir())[:10]
            raise ModelError(
                f"model folder '{path}' has no config.json (found: {found}); point "
                "model.name_or_path at a transformers model folder"
            )
        return str(path)
    if looks_local or not looks_hub:
        raise ModelError(
            f"model path '{name_or_path}' does not exist; build the organism with "
            "`dvc repro organism` or set model.name_or_path to a model folder or a hub id"
        )
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        log.info("HF_HUB_OFFLINE is set: loading %s from the local cache only", name_or_path)
    return name_or_path


def num_layers(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    count = getattr(config, "num_hidden_layers", None)
    if count is None:
        raise ModelError(f"{type(model).__name__}: config has no num_hidden_layers")
    return int(count)


def resolve_layer(model: nn.Module, layer: int | float) -> int:
    """A layer index from an index, a negative index, or a relative depth in (0, 1)."""
    n = num_layers(model)
    if isinstance(layer, float) and not float(layer).is_integer():
        if not 0 < layer < 1:
            raise ModelError(f"train.layer: relative depth must be in (0, 1), got {layer}")
        return min(n - 1, int(layer * n))
    index = int(layer)
    if not -n <= index < n:
        raise ModelError(
            f"train.layer: {index} is out of range for a model with {n} layers; use 0..{n - 1}, "
            f"-{n}..-1 or a relative depth such as 0.6"
        )
    return index % n


def resolve_modules(
    model: nn.Module, pattern: str, layers: int | float | list[int | float]
) -> dict[str, nn.Module]:
    """Modules named by a pattern such as ``model.layers.{layer}.self_attn.o_proj``, for one or
    more layers, found through peft and quantization wrappers. Keys are the unwrapped names."""
    wanted = layers if isinstance(layers, list) else [layers]
    found: dict[str, nn.Module] = {}
    for layer in wanted:
        name = pattern.format(layer=resolve_layer(model, layer))
        found[name] = get_module(model, name)
    return found


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The module called `name` in the unwrapped model, wherever a wrapper has moved it."""
    modules: dict[str, nn.Module] = {}
    prefixes = sorted(_WRAPPER_PREFIXES, key=len, reverse=True)
    for full, module in model.named_modules():
        prefix = next(p for p in prefixes if full.startswith(p))
        short = full[len(prefix) :]
        if not any(part == "base_layer" or part.startswith("lora_") for part in short.split(".")):
            modules.setdefault(short, module)  # adapter internals are no choice to offer
    if name in modules:
        return modules[name]
    layer = re.match(r"(.*?\.\d+)\.", name)
    near = [n for n in modules if layer and n.startswith(f"{layer.group(1)}.")]
    near = near or [n for n in modules if n and n.count(".") <= 3]
    raise ModelError(
        f"train.module: '{name}' is not a module of this model; valid names there include: "
        f"{', '.join(near[:20])}"
    )
