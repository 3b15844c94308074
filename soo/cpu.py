"""The CPU math a run uses: thread count, deterministic algorithms, and a record of the code path
(torch, BLAS, CPU capability) that explains why two machines can give different floats."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

# Environment variables that choose a math code path: MKL's conditional numerical reproducibility
# branch, torch's own vectorised kernels, and the thread pools.
CODE_PATH_VARIABLES = (
    "MKL_CBWR",
    "ATEN_CPU_CAPABILITY",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_ENABLE_INSTRUCTIONS",
)


def pin_math(threads: int) -> None:
    """A fixed thread count (not "all cores") and deterministic algorithms for this process."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


@contextmanager
def tokenizer_threads(threads: int) -> Iterator[None]:
    """Inside the block, the Rust tokenizers encode and train in parallel (the same ids as
    serially) on `threads` threads: RAYON_NUM_THREADS (unless already set) sizes the pool when it
    first starts, once a process. The block overrides
    TOKENIZERS_PARALLELISM (serial for threads <= 1) and restores it on exit: entry points set it
    to "false" (soo.runtime), so a process forked outside the block does not inherit a thread
    pool it does not have. Nothing may fork inside the block."""
    saved = {k: os.environ.get(k) for k in ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS")}
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, threads)))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), flags=re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


def blas_info() -> str:
    """The BLAS torch was built with and, for MKL, its version line."""
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    mkl = re.search(r"Intel\(R\) (?:oneAPI )?Math Kernel Library Version ([^\n]+)", config)
    name = blas.group(1) if blas else "unknown"
    return f"{name} {mkl.group(1).strip()}" if mkl else name


def math_environment() -> dict:
    """What decides the floats of a CPU run, for metrics files."""
    return {
        "torch": torch.__version__,
        "blas": blas_info(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "variables": {k: os.environ[k] for k in CODE_PATH_VARIABLES if k in os.environ},
    }
