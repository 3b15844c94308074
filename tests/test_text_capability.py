"""Capability on real text for pretrained models (`evaluate.capability: text`)."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from soo.config import EvaluateParams
from soo.text_capability import pydoc_passages, text_capability, text_measure
from tests.tiny import save_tiny_model


def test_passages_are_python_docs_spread_and_stable():
    passages = pydoc_passages(40)
    assert len(passages) == 40 == len(set(passages))
    assert all(len(p.split()) == 48 for p in passages)
    assert pydoc_passages(40) == passages
    assert any("statement" in p for p in passages)  # the language reference's prose


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = pydoc_passages(6, words=12)
    folder = save_tiny_model(tmp_path_factory.mktemp("m") / "m", texts)
    return (
        AutoModelForCausalLM.from_pretrained(folder),
        AutoTokenizer.from_pretrained(folder),
        texts,
    )


def test_perplexity_and_accuracy_match_the_model_s_own_loss(tiny):
    """Batched with right padding, the figures are those of each text alone, weighted by its
    predicted tokens: perplexity = exp(mean cross-entropy), as the model's own loss computes it."""
    model, tokenizer, texts = tiny
    texts = [texts[0], " ".join(texts[1].split()[:5])]  # unequal lengths: padding in the batch
    got = text_capability(model, tokenizer, texts, batch_size=2)
    nll, correct, count = 0.0, 0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        out = model(input_ids=ids, labels=ids)
        n = ids.shape[1] - 1
        nll += out.loss.item() * n
        correct += (out.logits[0, :-1].argmax(-1) == ids[0, 1:]).sum().item()
        count += n
    assert got["tokens"] == count
    assert got["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    assert got["accuracy"] == pytest.approx(correct / count, abs=1e-6)


def test_a_model_that_predicts_the_text_scores_full_accuracy(tiny):
    """The measure can tell: an LM head rigged to predict each next token of a text gets
    accuracy 1 and a perplexity near 1 on it; the random model does not."""
    model, tokenizer, texts = tiny
    words = list(dict.fromkeys(w for t in texts for w in t.replace(".", " .").split()))
    text = " ".join(words[:12])  # distinct tokens: each has one successor
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(set(ids)) == len(ids) == 12
    before = text_capability(model, tokenizer, [text])
    rigged = AutoModelForCausalLM.from_config(model.config)
    rigged.load_state_dict(model.state_dict())
    with torch.no_grad():  # position embeddings aside, make logits depend on the current token
        hidden = model.config.hidden_size
        rigged.lm_head.weight.zero_()
        for layer in rigged.model.layers:
            for p in layer.parameters():
                p.zero_()
        rigged.model.norm.weight.fill_(1.0)
        emb = torch.zeros_like(rigged.model.embed_tokens.weight)
        for i, tok in enumerate(ids[:-1]):
            emb[tok, i % hidden] = 1.0
            rigged.lm_head.weight[ids[i + 1], i % hidden] = 50.0
        rigged.model.embed_tokens.weight.copy_(emb)
    after = text_capability(rigged, tokenizer, [text])
    assert after["accuracy"] == 1.0 and after["perplexity"] < 1.01
    assert before["accuracy"] < 0.5


def test_the_measure_gives_its_passages_as_the_kl_texts(tiny):
    model, tokenizer, _ = tiny
    measure = text_measure(EvaluateParams(capability="text", n_capability=5, batch_size=4))
    metrics, texts = measure(model, tokenizer, [])
    assert texts == pydoc_passages(5) and metrics["tokens"] > 0
