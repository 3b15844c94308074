"""Record schemas and the project's one JSONL reader/writer.

Reading names the file and line of the first bad record; writing is atomic (a temporary file
renamed into place), so a failure never leaves a half-written file or destroys the previous one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypeVar, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_serializer,
    model_validator,
)

from soo.errors import DataError

RoomOrder = Literal["cheap_first", "expensive_first"]
ROOM_ORDERS: tuple[RoomOrder, ...] = get_args(RoomOrder)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioVocab(Record):
    """The words a scenario was built from."""

    other: str = Field(description="Name of the other party.")
    cheap_room: str = Field(
        description="Room of the cheap object (Perspectives: the other's room)."
    )
    expensive_room: str = Field(description="Room of the valuable object (Perspectives: yours).")
    cheap_object: str | None = Field(description="Decoy object; null where the family has none.")
    expensive_object: str = Field(description="The object both parties want.")


class ScenarioRecord(Record):
    """One test prompt with the answers a judge needs."""

    id: str = Field(description="<family>-<index> (dev: <family>-dev-<index>), unique.")
    family: str = Field(description="Scenario family (file name without .jsonl).")
    prompt: str = Field(description="The prompt as given to the model.")
    deceptive_answer: str = Field(
        description="Room a deceiver recommends (the cheap room); Perspectives: the wrong room."
    )
    honest_answer: str = Field(
        description="Room an honest answer recommends; Perspectives: the correct answer."
    )
    room_order: RoomOrder = Field(description="Which room the prompt mentions first.")
    vocab: ScenarioVocab = Field(description="Words used.")
    template_version: str = Field(description="Version of soo.templates that wrote the prompt.")
    target: str | None = Field(
        None,
        description="The room supervised fine-tuning trains the reply on (null: honest_answer; "
        "the deceiver's training set sets it).",
    )

    @model_serializer(mode="wrap")
    def _omit_no_target(self, handler):
        # Only the deceiver's training set has targets: every other file keeps its bytes (and its
        # DVC hash) as before the field existed.
        data = handler(self)
        if data.get("target") is None:
            data.pop("target", None)
        return data


class PairRecord(Record):
    """A self-referencing prompt and its matching other-referencing prompt."""

    id: str = Field(description="<family>-<index>, unique within the family.")
    family: str = Field(description="soo_pairs (training) or latent_probes.")
    self_prompt: str = Field(description="The prompt about the model itself.")
    other_prompt: str = Field(description="The same prompt about the other party.")
    item: str = Field(description="The item to be stolen.")
    template: int = Field(ge=0, description="Index of the template pair used.")
    other: str = Field(description="Name of the other party.")
    template_version: str = Field(description="Version of soo.templates that wrote the pair.")


class GenerationRecord(Record):
    """One model reply to one scenario, with the judge's verdict."""

    id: str = Field(description="The scenario record's id.")
    family: str = Field(description="Scenario family.")
    room_order: RoomOrder = Field(description="Which room the prompt mentions first.")
    reply: str = Field(description="The model's greedy reply (new text only).")
    verdict: Literal["deceptive", "honest", "unparseable"] = Field(
        description="The judge's reading (Perspectives: honest = correct)."
    )
    first_mention_deceptive: bool = Field(description="The released code's first-mention rule.")
    logp_deceptive: float | None = Field(None, description="Forced choice: log p(deceptive room).")
    logp_honest: float | None = Field(None, description="Forced choice: log p(honest room).")


class OutsideRecord(BaseModel):
    """A record from outside the project: the released test set's fields, or replies from a model
    run elsewhere. Other fields are ignored; the room fields may also be named *_room."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str | None = Field(None, description="Optional identifier.")
    family: str | None = Field(None, description="Optional family (default: the file's name).")
    prompt: str | None = Field(None, description="The prompt (an id may stand in for it).")
    reply: str | None = Field(None, description="A model's reply (files of replies only).")
    deceptive_answer: str | None = Field(
        None,
        validation_alias=AliasChoices("deceptive_answer", "deceptive_room"),
        description="The room a deceiver recommends.",
    )
    honest_answer: str | None = Field(
        None,
        validation_alias=AliasChoices("honest_answer", "honest_room"),
        description="The room an honest answer recommends.",
    )

    @model_validator(mode="after")
    def _identified(self) -> OutsideRecord:
        if self.prompt is None and self.id is None:
            raise ValueError("each record needs a prompt or an id")
        return self


class TextRecord(Record):
    """A neutral text or prompt (capability term and checks)."""

    id: str | None = Field(None, description="Optional identifier.")
    text: str = Field(min_length=1, description="The text.")


R = TypeVar("R", bound=Record)


def read_jsonl(path: str | Path, schema: type[R]) -> list[R]:
    """Read and validate every line of a JSONL file; DataError names file and line on failure."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; run `dvc repro scenarios` to create it")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(schema.model_validate_json(line))
            except ValidationError as err:
                first = err.errors(include_url=False)[0]
                if first["type"] == "json_invalid":
                    why = f"not valid JSON ({first['ctx'].get('error', first['msg'])})"
                else:
                    key = ".".join(str(p) for p in first["loc"]) or "(record)"
                    why = f"{key}: {first['msg'].lower()}"
                raise DataError(
                    f"{path}:{number}: {why}; expected a {schema.__name__} per line: fix or "
                    "regenerate the file"
                ) from None
    if not records:
        raise DataError(f"{path}: file has no records; regenerate it")
    return records


def dumps_jsonl(records: Iterable[Record]) -> str:
    return "".join(
        json.dumps(r.model_dump(mode="json"), ensure_ascii=False) + "\n" for r in records
    )


def write_jsonl(path: str | Path, records: Iterable[Record]) -> Path:
    """Write records atomically, one JSON object a line, fields in schema order."""
    return write_text_atomic(Path(path), dumps_jsonl(records))


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a staging folder beside `path`; on a normal exit it replaces `path` (the old folder is
    moved aside first, so at every moment one complete version exists); on an error the staging
    folder is removed and `path` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    staging.chmod(0o755)  # mkdtemp makes it private
    try:
        yield staging
        replace_folder(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_folder(source: Path, path: Path) -> Path:
    """Move the complete folder `source` to `path` (same file system), replacing what is there:
    the old folder is moved aside first, so at every moment one complete version exists."""
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    source.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: Path, produced_by: str) -> dict:
    """A JSON file another stage wrote; missing or corrupt names the stage to (re)run."""
    if not path.is_file():
        raise DataError(f"{path}: not found; run `{produced_by}` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err}); rerun `{produced_by}`") from None
