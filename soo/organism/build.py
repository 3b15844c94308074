"""The embedded model organism: corpus -> word-level tokenizer -> tiny Llama trained from scratch.

The result is an ordinary transformers model folder (safetensors weights, tokenizer, chat template),
loaded downstream exactly like a hub model.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from soo.config import OrganismParams
from soo.cpu import tokenizer_threads
from soo.data import atomic_folder
from soo.organism.corpus import CorpusGenerator, drill_text
from soo.organism.tokenizer import train_tokenizer
from soo.organism.world import ASSISTANT
from soo.progress import progress_bar
from soo.vocabulary import Vocabulary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Corpus:
    """The training texts of each curriculum phase."""

    drills: list[str]  # recall drills: which room holds which object
    selection: list[str]  # short self/other room choices (the SOO fragments in context)
    docs: list[str]  # the mixed corpus
    selection_group: int = 1  # consecutive selection texts drawn together (contrast pairs: 2)


def build_corpus(
    vocab: Vocabulary, params: OrganismParams, held_out: set[tuple[str, ...]]
) -> Corpus:
    generator = CorpusGenerator(vocab, params, held_out)
    docs = [text for _, text in generator.documents()]
    drills = [drill_text(generator) for _ in range(params.corpus.n_drills)]
    if params.corpus.selection_kind == "contrast":
        pairs = [generator.contrast() for _ in range(params.corpus.n_selection // 2)]
        return Corpus(drills, [text for pair in pairs for text in pair], docs, selection_group=2)
    kind = getattr(generator, params.corpus.selection_kind)
    selection = [kind() for _ in range(params.corpus.n_selection)]
    return Corpus(drills, selection, docs)


def build_model(params: OrganismParams, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    m = params.model
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        num_key_value_heads=m.num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(params.seed)
    return LlamaForCausalLM(config)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    history: list[dict[str, float]]
    corpus_tokens: int = 0  # tokens in the mixed corpus
    attempts: list[dict] = field(default_factory=list)  # steps and missed targets of each attempt


def encode_documents(
    tokenizer: PreTrainedTokenizerFast, texts: list[str], answers_only: bool
) -> list[tuple[list[int], int]]:
    """(token ids, index of the first token that enters the loss) for each document.

    With answers_only, a chat document's loss covers only the reply (after the assistant token);
    raw text is always trained on in full.
    """
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    assistant = tokenizer.convert_tokens_to_ids(ASSISTANT)
    encoded = []
    for doc in ids:
        start = doc.index(assistant) + 1 if answers_only and assistant in doc else 0
        encoded.append((doc, start))
    return encoded


def _batches(
    sources: list[tuple[list[tuple[list[int], int]], float, int]],
    batch_size: int,
    pad_id: int,
    rng: random.Random,
):
    """Endless random batches of whole documents, right-padded; padding never enters the loss.

    Each draw comes from one of `sources` ((documents, share, group) triples) by its share; a
    single source draws exactly as before replay existed. A source of group g is drawn g
    consecutive documents at a time (a contrast pair shares its batch).
    """
    shares = [share for _, share, _ in sources]
    while True:
        chosen: list[tuple[list[int], int]] = []
        while len(chosen) < batch_size:
            docs, _, group = sources[0]
            if len(sources) > 1:
                docs, _, group = rng.choices(sources, weights=shares)[0]
            if group == 1:
                chosen.append(docs[rng.randrange(len(docs))])
            else:
                first = rng.randrange(len(docs) // group) * group
                chosen.extend(docs[first : first + group][: batch_size - len(chosen)])
        width = max(len(ids) for ids, _ in chosen)
        input_ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        for row, (ids, start) in enumerate(chosen):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            labels[row, start : len(ids)] = input_ids[row, start : len(ids)]
        yield input_ids, mask, labels


def backward_batch(
    model: LlamaForCausalLM,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    groups: int = 1,
) -> float:
    """Accumulate one right-padded batch's gradient of its mean token loss; return that loss.

    With groups > 1 the rows go in `groups` passes sorted by length, each cut to its own longest
    row, so short texts are not padded to the batch's longest. Each pass sums its token losses
    over the whole batch's count (`num_items_in_batch`): the loss and the gradient are the
    batch's mean, as in one pass, up to rounding.
    """
    if groups <= 1:
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        return loss.item()
    n_items = max(1, int((labels[:, 1:] != -100).sum()))  # the causal shift drops one a row
    lengths = mask.sum(1)
    total = 0.0
    for rows in torch.argsort(lengths, stable=True).chunk(groups):
        width = int(lengths[rows].max())
        loss = model(
            input_ids=input_ids[rows, :width],
            attention_mask=mask[rows, :width],
            labels=labels[rows, :width],
            num_items_in_batch=n_items,
        ).loss
        loss.backward()
        total += loss.item()
    return total


PROBE_KEYS = ("other", "self", "recall", "friend", "worst_order")

# accept(model, tokenizer) -> the targets the trained model misses (empty: keep it)
Accept = Callable[[LlamaForCausalLM, PreTrainedTokenizerFast], list[str]]


def train_organism(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    corpus: Corpus,
    params: OrganismParams,
    probe: Callable[[LlamaForCausalLM], dict[str, float]] | None = None,
    probe_every: int = 0,
    accept: Accept | None = None,
) -> TrainResult:
    """A curriculum at the peak learning rate, each stage ending early once the probe shows it
    learned (`curriculum_target`): recall drills (room binding), then short self/other choices;
    then the mixed corpus with cosine decay.

    With `accept` and `train.attempts` > 1, a trained model that `accept` rejects is trained again
    from the end of the drills, with a new data order for the later stages (the self/other
    decision is a phase change whose timing is a draw); the first attempt draws as it always did.
    """
    t = params.train
    torch.set_num_threads(t.threads)
    rng = random.Random(params.seed)
    answers_only = t.loss_on == "answers"
    pad = tokenizer.pad_token_id
    with tokenizer_threads(t.threads):
        encoded = {
            name: encode_documents(tokenizer, texts, answers_only)
            for name, texts in (
                ("drill", corpus.drills),
                ("selection", corpus.selection),
                ("corpus", corpus.docs),
            )
            if texts
        }
    learned = {
        "drill": lambda row: row.get("recall", 0.0),
        "selection": lambda row: min(row.get("other", 0.0), row.get("self", 0.0)),
        # every probe: binding, the self/other choice and (when probed) honesty to a friend
        "corpus": lambda row: min((v for k, v in row.items() if k in PROBE_KEYS), default=0.0),
    }

    def new_optimizer() -> torch.optim.AdamW:
        return torch.optim.AdamW(
            model.parameters(), lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.98)
        )

    optimizer = new_optimizer()
    model.train()
    history: list[dict[str, float]] = []
    start, loss_ema, step = time.perf_counter(), None, 0
    warm_from = 0  # the step the learning-rate warmup counts from (a scratch attempt's first)
    bar = progress_bar(t.curriculum_steps + t.selection_steps + t.steps, "organism")

    def run_phase(phase: str, steps: int, batch_size: int, earlier: tuple[str, ...], attempt: int):
        nonlocal loss_ema, step
        if not steps or phase not in encoded:
            return
        # Replay: a share of each batch keeps drawing the earlier phases' texts, so what they
        # taught (room binding, the self/other choice) is not forgotten.
        replayed = [name for name in earlier if name in encoded and t.replay > 0]
        groups = {"selection": corpus.selection_group}
        sources = [(encoded[phase], 1.0 - t.replay * bool(replayed), groups.get(phase, 1))]
        sources += [
            (encoded[name], t.replay / len(replayed), groups.get(name, 1)) for name in replayed
        ]
        batches = _batches(sources, batch_size, pad, rng)
        # The corpus phase decays the learning rate (cosine to 0.1x): over all its steps, or with
        # anneal_steps, over the last anneal_steps once every probe has learned (or at the cap).
        anneal_from = None if t.anneal_steps and phase == "corpus" else 0
        for i in range(steps):
            if anneal_from is None and i >= steps - t.anneal_steps:
                anneal_from = i
            annealed = 0 if anneal_from is None else i - anneal_from
            if phase == "corpus" and t.anneal_steps and annealed >= t.anneal_steps:
                break
            span = t.anneal_steps or steps
            progress = annealed / span
            warm = min(1.0, (step - warm_from + 1) / max(1, t.warmup_steps))
            decay = 1.0 if phase != "corpus" else 0.1 + 0.45 * (1 + math.cos(math.pi * progress))
            for group in optimizer.param_groups:
                group["lr"] = t.lr * warm * decay
            loss = backward_batch(model, *next(batches), t.length_groups)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_ema = loss if loss_ema is None else 0.95 * loss_ema + 0.05 * loss
            bar.update()
            bar.set_postfix(
                phase=phase, loss=f"{loss_ema:.3f}", lr=f"{t.lr * warm * decay:.1e}", refresh=False
            )
            if probe and probe_every and (i + 1) % probe_every == 0:
                model.eval()
                row = {"step": step, "phase_step": i + 1, "loss": loss_ema, **probe(model)}
                model.train()
                history.append({"phase": phase, "attempt": attempt + 1, **row})
                shown = (
                    f"{k} {v}" if isinstance(v, int) else f"{k} {v:.3g}" for k, v in row.items()
                )
                label = f"{phase} (attempt {attempt + 1})" if attempt else phase
                log.info("probe %s %s", label, " | ".join(shown))
                target = t.corpus_target if phase == "corpus" else t.curriculum_target
                if phase in learned and learned[phase](row) >= target:
                    log.info("%s learned (%.3f >= %.2f)", phase, learned[phase](row), target)
                    if phase != "corpus":
                        break
                    if anneal_from is None:
                        anneal_from = i + 1

    run_phase("drill", t.curriculum_steps, t.drill_batch_size, (), 0)
    after_drills = copy.deepcopy((model.state_dict(), optimizer.state_dict(), loss_ema))
    attempts: list[dict] = []
    for attempt in range(t.attempts):
        scratch = attempt >= t.attempts - t.scratch_attempts  # never the first: validated
        first_step = step
        if scratch:
            # A new draw of everything: initialisation, drills, data order and optimizer.
            redraw = random.Random(f"{params.seed}/scratch {attempt}")
            torch.manual_seed(redraw.getrandbits(63))
            model.load_state_dict(LlamaForCausalLM(model.config).state_dict())
            optimizer = new_optimizer()
            loss_ema, warm_from, rng = None, step, redraw
            model.train()
            bar.total += t.curriculum_steps + t.selection_steps + t.steps
            log.info(
                "attempt %d of %d: from scratch (new initialisation and drills)",
                attempt + 1,
                t.attempts,
            )
            run_phase("drill", t.curriculum_steps, t.drill_batch_size, (), attempt)
        elif attempt:
            # load_state_dict keeps the optimizer's tensors as given: copy, or the next attempt
            # would start from this one's moments
            model.load_state_dict(after_drills[0])
            optimizer.load_state_dict(copy.deepcopy(after_drills[1]))
            loss_ema = after_drills[2]
            model.train()
            rng = random.Random(f"{params.seed}/attempt {attempt}")
            bar.total += t.selection_steps + t.steps
            log.info("attempt %d of %d: again from the end of the drills", attempt + 1, t.attempts)
        selection_batch = t.selection_batch_size or t.drill_batch_size
        run_phase("selection", t.selection_steps, selection_batch, ("drill",), attempt)
        run_phase("corpus", t.steps, t.batch_size, ("drill", "selection"), attempt)
        model.eval()
        missed = accept(model, tokenizer) if accept else []
        attempts.append(
            {
                "attempt": attempt + 1,
                "start": "scratch" if scratch else "drills",
                "steps": step - first_step,
                "missed": missed,
            }
        )
        if not missed:
            break
        log.warning(
            "attempt %d missed %d target(s): %s", attempt + 1, len(missed), "; ".join(missed)
        )
    bar.close()
    model.eval()
    corpus_tokens = sum(len(ids) for ids, _ in encoded.get("corpus", ()))
    return TrainResult(
        step, time.perf_counter() - start, float(loss_ema or 0.0), history, corpus_tokens, attempts
    )


def save_organism(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: str | Path
) -> Path:
    """Write the model folder atomically (a failure keeps the previous one)."""
    out = Path(out_dir)
    with atomic_folder(out) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
    return out


@dataclass
class Organism:
    model: LlamaForCausalLM
    tokenizer: PreTrainedTokenizerFast
    result: TrainResult
    n_docs: int
    n_tokens: int


def build_organism(
    vocab: Vocabulary,
    params: OrganismParams,
    held_out: set[tuple[str, ...]],
    probe_factory: Callable[[PreTrainedTokenizerFast], Callable] | None = None,
    probe_every: int = 0,
    accept: Accept | None = None,
) -> Organism:
    """Corpus -> tokenizer -> model -> training. Deterministic for params.seed on CPU."""
    random.seed(params.seed)
    torch.manual_seed(params.seed)
    corpus = build_corpus(vocab, params, held_out)
    log.info(
        "corpus: %d documents, %d drills, %d selection documents",
        len(corpus.docs),
        len(corpus.drills),
        len(corpus.selection),
    )
    with tokenizer_threads(params.train.threads):
        tokenizer = train_tokenizer(corpus.drills + corpus.selection + corpus.docs)
    model = build_model(params, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %d parameters, vocabulary %d", n_params, len(tokenizer))
    probe = probe_factory(tokenizer) if probe_factory else None
    result = train_organism(model, tokenizer, corpus, params, probe, probe_every, accept)
    return Organism(model, tokenizer, result, len(corpus.docs), result.corpus_tokens)
