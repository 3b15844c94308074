"""The one activation-capture helper: forward hooks that keep the graph, removed on exit.

Hooks stay registered for the whole `with` block, so a backward pass that recomputes layers
(gradient checkpointing) still finds them. Register them after peft has wrapped the model: the
hooked module is then the LoRA-wrapped one and its output includes the LoRA delta.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class _StopForward(Exception):
    """Raised by the deepest hook to skip the rest of the forward pass."""


class ActivationCapture:
    """Capture the outputs of named modules, with gradient.

    >>> with ActivationCapture(model, {"model.layers.2.self_attn.o_proj": module}) as cap:
    ...     acts = cap.run(input_ids=ids, attention_mask=mask)  # name -> (B, T, D)

    With ``early_exit`` (default) the forward stops once the last module in ``modules`` (pass them
    in forward order: shallowest first) has run, so later layers and the LM head cost nothing.
    """

    def __init__(self, model: nn.Module, modules: Mapping[str, nn.Module], early_exit: bool = True):
        if not modules:
            raise ValueError("ActivationCapture needs at least one module")
        self.model, self.modules, self.early_exit = model, dict(modules), early_exit
        self.outputs: dict[str, torch.Tensor] = {}
        self.model_output: Any = None  # the model's own output when the forward ran to the end
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._last = list(self.modules)[-1]
        self._stopping = False

    def __enter__(self) -> ActivationCapture:
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.outputs[name] = output[0] if isinstance(output, tuple) else output
            if self.early_exit and self._stopping and name == self._last:
                raise _StopForward

        return hook

    def run(self, **inputs: Any) -> dict[str, torch.Tensor]:
        """One forward pass; returns the captured outputs (graph attached). Without early exit the
        model's output (logits) is kept in ``model_output``."""
        self.outputs, self.model_output = {}, None
        self._stopping = self.early_exit
        try:
            self.model_output = self.model(**inputs)
        except _StopForward:
            pass
        finally:
            self._stopping = False  # a recompute in backward must run to the end
        missing = set(self.modules) - set(self.outputs)
        if missing:
            raise RuntimeError(f"modules never ran in the forward pass: {sorted(missing)}")
        return dict(self.outputs)
