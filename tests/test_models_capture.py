import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.testing import assert_close
from transformers import LlamaForCausalLM

from soo.capture import ActivationCapture
from soo.models import ModelError, load_model, resolve_layer, resolve_modules
from tests.tiny import tiny_llama

PATTERN = "model.layers.{layer}.self_attn.o_proj"


def with_lora(model: LlamaForCausalLM) -> torch.nn.Module:
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=False,
    )
    return get_peft_model(model, config)


def test_layers_by_index_negative_index_and_relative_depth():
    model = tiny_llama()
    assert [resolve_layer(model, x) for x in (0, 3, -1, -4, 0.6, 0.99)] == [0, 3, 3, 0, 2, 3]
    with pytest.raises(
        ModelError, match="train.layer: 4 is out of range for a model with 4 layers"
    ):
        resolve_layer(model, 4)
    with pytest.raises(ModelError, match=r"relative depth must be in \(0, 1\), got 1.5"):
        resolve_layer(model, 1.5)


def test_modules_resolve_through_peft_and_bad_names_list_choices():
    peft_model = with_lora(tiny_llama())
    found = resolve_modules(peft_model, PATTERN, [1, -1])
    assert list(found) == ["model.layers.1.self_attn.o_proj", "model.layers.3.self_attn.o_proj"]
    q = resolve_modules(peft_model, "model.layers.{layer}.self_attn.q_proj", 0)
    assert hasattr(next(iter(q.values())), "lora_A")  # the LoRA-wrapped module, not base_layer
    with pytest.raises(
        ModelError, match=r"'model.layers.1.attn.o_proj' is not a module.*self_attn.o_proj"
    ):
        resolve_modules(peft_model, "model.layers.{layer}.attn.o_proj", 1)


def batch(lengths, width, seed=0):
    torch.manual_seed(seed)
    ids = torch.randint(1, 50, (len(lengths), width))
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    return ids * mask, mask


def test_early_exit_equals_full_forward():
    model = tiny_llama()
    ids, mask = batch([6, 4], 6)
    modules = resolve_modules(model, PATTERN, 1)
    with ActivationCapture(model, modules) as early:
        a = early.run(input_ids=ids, attention_mask=mask)
    with ActivationCapture(model, modules, early_exit=False) as full:
        b = full.run(input_ids=ids, attention_mask=mask)
    name = "model.layers.1.self_attn.o_proj"
    assert_close(a[name], b[name])
    # Hooks are gone after the block.
    assert not modules[name]._forward_hooks


def test_one_concatenated_forward_equals_two_forwards():
    model = tiny_llama()
    self_ids, self_mask = batch([5, 3], 5, seed=1)
    other_ids, other_mask = batch([5, 3], 5, seed=2)
    modules = resolve_modules(model, PATTERN, 2)
    name = next(iter(modules))
    with ActivationCapture(model, modules) as cap:
        joint = cap.run(
            input_ids=torch.cat([self_ids, other_ids]),
            attention_mask=torch.cat([self_mask, other_mask]),
        )[name]
        apart = [
            cap.run(input_ids=i, attention_mask=m)[name]
            for i, m in ((self_ids, self_mask), (other_ids, other_mask))
        ]
    both = torch.cat(apart)
    valid = torch.cat([self_mask, other_mask]).bool()
    assert_close(joint[valid], both[valid], rtol=1e-5, atol=1e-6)


def test_gradient_reaches_lora_and_never_base_weights():
    peft_model = with_lora(tiny_llama())
    modules = resolve_modules(peft_model, PATTERN, 2)
    ids, mask = batch([6, 6], 6)
    with ActivationCapture(peft_model, modules) as cap:
        acts = next(iter(cap.run(input_ids=ids, attention_mask=mask).values()))
        (acts[0] - acts[1]).pow(2).mean().backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)
    assert any("layers.2.self_attn" in n and g.abs().sum() > 0 for n, g in grads.items())
    # LoRA above the captured layer gets nothing: the forward stopped at layer 2.
    assert not any("layers.3." in n for n in grads)
    assert all(not p.requires_grad for n, p in peft_model.named_parameters() if "lora_" not in n)


def test_gradient_checkpointing_keeps_the_graph():
    peft_model = with_lora(tiny_llama())
    peft_model.train()
    peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model.enable_input_require_grads()
    modules = resolve_modules(peft_model, PATTERN, 1)
    ids, mask = batch([6, 6], 6)
    with ActivationCapture(peft_model, modules) as cap:
        acts = next(iter(cap.run(input_ids=ids, attention_mask=mask).values()))
        (acts[0] - acts[1]).pow(2).mean().backward()
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in peft_model.named_parameters()
        if "lora_" in n
    )


def test_loader_reads_a_local_folder_and_names_bad_inputs(tmp_path, monkeypatch):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    core = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 2}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="b")
    model = tiny_llama()
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded, tok = load_model(str(tmp_path / "m"), device="cpu")
    assert tok.pad_token == "b" and loaded.dtype == torch.float32
    ids = torch.tensor([[1, 2, 1]])
    assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)

    with pytest.raises(
        ModelError, match=r"model path '.*/missing' does not exist; build the organism"
    ):
        load_model(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"has no config.json \(found: \[\]\)"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="4-bit loading .* needs a GPU"):
        load_model(str(tmp_path / "m"), load_in_4bit=True, device="cpu")
    with pytest.raises(ModelError, match="model 'nobody/no-such-model': cannot be loaded"):
        load_model("nobody/no-such-model", device="cpu")
