"""Progress off a terminal (a log file, CI, a Prefect or Ray worker): lines, not redraws, and at
most one every few seconds, whatever the number of steps."""

import time

from soo import progress
from soo.generation import generate
from tests.tiny import save_tiny_model


def test_a_bar_off_a_terminal_writes_a_few_whole_lines(capsys):
    bar = progress.progress_bar(5000, "organism")
    for _ in range(5000):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and 1 <= len(lines) <= 3, lines  # not one line per step
    assert lines[-1].startswith("organism: 100%") and "5000/5000" in lines[-1]


def test_every_lets_one_call_through_per_period(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    every = progress.Every(5.0)
    passed = []
    for _ in range(30):  # one call a second for 30 s
        passed.append(every())
        now[0] += 1.0
    assert [i for i, ok in enumerate(passed) if ok] == [0, 5, 10, 15, 20, 25]


def test_generation_reports_prompts_as_lines(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [f"where is the box number {i}" for i in range(40)]
    save_tiny_model(tmp_path / "m", texts)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    replies = generate(model, tokenizer, texts, max_new_tokens=2, batch_size=4, desc="gen")
    assert len(replies) == 40
    ours = [line for line in capsys.readouterr().err.split("\n") if "gen:" in line]
    assert 1 <= len(ours) <= 3 and not any("\r" in line for line in ours), ours
    assert "40/40" in ours[-1]
