"""The report: figures (matplotlib) and tables from the pipeline's metrics, as HTML (figures
embedded) and Markdown (figures as PNG files next to it)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIGURES = ("deception", "latent", "training", "unparseable")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def deception_figure(base: dict, seeds: dict[str, dict]) -> bytes:
    """Deceptive share per family, base vs each SOO seed, with Wilson 95% intervals."""
    families = list(base["families"])
    models = {"base": base, **seeds}
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(families) + 1.5))
    height = 0.8 / len(models)
    for i, (name, metrics) in enumerate(models.items()):
        rates = [metrics["families"][f]["deceptive"] for f in families]
        ys = [k + i * height for k in range(len(families))]
        xs = [r["rate"] for r in rates]
        err = [  # clamped: at 0 or 1 the bounds can sit a rounding error inside the rate
            [max(0.0, r["rate"] - r["low"]) for r in rates],
            [max(0.0, r["high"] - r["rate"]) for r in rates],
        ]
        ax.barh(ys, xs, height=height, xerr=err, capsize=2, label=name)
    ax.set_yticks([k + 0.4 - height / 2 for k in range(len(families))], families)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("deceptive replies (judge), Wilson 95% interval")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title("Deception per scenario family (Perspectives: wrong answers)")
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
    head = ["metric", *models, "SOO mean ± SD"]
    headline = [head]
    for key in base["headline"]:
        soo = summary["soo"].get(key)
        spread = f"{soo['mean']:.3f} ± {soo['sd'] or 0:.3f}" if soo else "n/a"
        headline.append([key, *(fmt(m["headline"][key]) for m in models.values()), spread])
    capability = [head]
    for key in ("accuracy", "recall_accuracy", "facts_accuracy", "perplexity", "kl_to_base"):
        soo = summary["soo"].get(f"capability_{key}")
        spread = f"{soo['mean']:.4f} ± {soo['sd'] or 0:.4f}" if soo else "n/a"
        capability.append([key, *(fmt(m["capability"][key]) for m in models.values()), spread])
    targets = [["target", "value", "met"]] + [
        [t["target"], fmt(t["value"]), "yes" if t["met"] else "MISSED"] for t in summary["targets"]
    ]
    return {"Headline": headline, "Capability": capability, "Targets": targets}


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
