"""Publication figures, each saved as PNG and PDF; a figure whose data is missing is skipped with a
note. The shared look (palette, markers, layout) lives in `style.py`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sendit.report.classes import class_names, confusion
from sendit.report.load import RunData
from sendit.report.style import RC, WIDTH, Styles, legend, new_figure, save_figure
from sendit.report.tables import distillation_names, teacher_of


@dataclass
class FigureFile:
    key: str
    title: str
    png: Path
    pdf: Path


def _curves(data: RunData, style: Styles, columns: list[tuple[str, str]], title: str) -> Figure:
    """Per-epoch curves, one panel per column; mean over seeds bold, each seed thin."""
    fig = new_figure(WIDTH, 3.0)
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    ep = data.epochs
    for ax, (col, label) in zip(axes, columns):
        for name in data.names:
            g = ep[(ep["name"] == name)].dropna(subset=[col]) if col in ep.columns else ep.iloc[:0]
            if g.empty:
                continue
            st = style(name)
            if g["seed"].nunique() > 1:
                for _, s in g.groupby("seed"):
                    ax.plot(
                        s["epoch"],
                        s[col],
                        color=st["color"],
                        linestyle=st["linestyle"],
                        linewidth=0.6,
                        alpha=0.4,
                        label="_seed",
                    )
            mean = g.groupby("epoch")[col].mean()
            ax.plot(mean.index, mean.values, label=data.pretty(name), markersize=4, linewidth=1.4, **st)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    legend(fig, list(axes))
    return fig


def learning_curves(data: RunData, style: Styles) -> Figure:
    cols = [
        (c, lab)
        for c, lab in (("val_accuracy", "Validation accuracy"), ("val_f1", "Validation F1"))
        if data.has("epochs", c)
    ]
    return _curves(data, style, cols, "Learning curves (all methods)")


def learning_curves_by_method(data: RunData, style: Styles) -> Figure:
    names = [n for n in data.names if n in set(data.epochs["name"])]
    ncol = min(4, len(names))
    nrow = -(-len(names) // ncol)
    fig = new_figure(WIDTH, 1.9 * nrow + 0.6)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharey=True).ravel()
    for ax, name in zip(axes, names):
        g = data.epochs[data.epochs["name"] == name]
        for col, lab, ls, mk in (
            ("val_accuracy", "Val accuracy", "-", "o"),
            ("val_f1", "Val F1", "--", "s"),
        ):
            if col in g.columns and g[col].notna().any():
                mean = g.groupby("epoch")[col].mean()
                ax.plot(
                    mean.index,
                    mean.values,
                    color="black",
                    linestyle=ls,
                    marker=mk,
                    markersize=3,
                    linewidth=1.0,
                    label=lab,
                )
        ax.set_title(data.pretty(name))
        ax.set_xlabel("Epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle("Validation accuracy and F1 per epoch, per method")
    legend(fig, list(axes[:1]))
    return fig


def loss_curves(data: RunData, style: Styles) -> Figure:
    cols = [
        (c, lab)
        for c, lab in (("train_loss", "Training loss"), ("val_loss", "Validation loss"))
        if data.has("epochs", c)
    ]
    return _curves(data, style, cols, "Loss curves")


def _test_points(data: RunData, test_set: str, extra: list[str]) -> pd.DataFrame:
    """Per-seed test accuracy of `test_set` joined with result columns (per method and seed)."""
    m = data.metrics[data.metrics["test_set"] == test_set][["name", "seed", "accuracy"]]
    r = data.results[["name", "seed", *[c for c in extra if c in data.results.columns]]]
    return m.merge(r, on=["name", "seed"], how="inner")


def _scatter(ax, pts: pd.DataFrame, x: str, style: Styles, data: RunData) -> None:
    """Each seed as a small hollow point, the mean over seeds as a large marker with ±std bars."""
    for name in data.names:
        g = pts[pts["name"] == name].dropna(subset=[x, "accuracy"])
        if g.empty:
            continue
        st = style(name)
        if len(g) > 1:
            ax.scatter(
                g[x],
                g["accuracy"],
                s=12,
                facecolors="none",
                edgecolors=st["color"],
                marker=st["marker"],
                linewidths=0.7,
                alpha=0.7,
            )
        xm, ym = g[x].mean(), g["accuracy"].mean()
        ys = g["accuracy"].std(ddof=1) if len(g) > 1 else 0.0
        ax.errorbar(
            xm,
            ym,
            yerr=ys,
            color=st["color"],
            marker=st["marker"],
            markersize=6,
            markeredgecolor="black",
            markeredgewidth=0.5,
            capsize=2,
            linestyle="none",
            label=data.pretty(name),
        )
        ax.annotate(data.pretty(name), (xm, ym), textcoords="offset points", xytext=(5, 4), fontsize=6.5)
    ax.margins(x=0.12, y=0.1)  # room for the labels of the extreme points


def peft_tradeoff(data: RunData, style: Styles) -> Figure | None:
    test_sets = list(dict.fromkeys(data.metrics["test_set"]))
    fig = new_figure(WIDTH if len(test_sets) > 1 else WIDTH * 0.62, 3.2)
    axes = fig.subplots(1, len(test_sets), squeeze=False)[0]
    for ax, ts in zip(axes, test_sets):
        pts = _test_points(data, ts, ["trainable_params"])
        _scatter(ax, pts, "trainable_params", style, data)
        ax.set_xscale("log")
        ax.set_xlabel("Trainable parameters (log scale)")
        ax.set_ylabel(f"Test accuracy ({ts})")
    fig.suptitle("Accuracy vs trainable parameters")
    legend(fig, list(axes))
    return fig


def cost_tradeoff(data: RunData, style: Styles) -> Figure:
    ts = data.metrics["test_set"].iloc[0]
    memory = "peak_memory_mb" if data.has("results", "peak_memory_mb") else "memory_delta_mb"
    panels = [
        (c, lab)
        for c, lab in (
            ("runtime_sec", "Training time (s)"),
            (memory, "Peak memory (MB)" if memory == "peak_memory_mb" else "Memory increase (MB)"),
        )
        if data.has("results", c)
    ]
    fig = new_figure(WIDTH, 3.2)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    pts = _test_points(data, ts, [c for c, _ in panels])
    for ax, (col, lab) in zip(axes, panels):
        _scatter(ax, pts, col, style, data)
        ax.set_xlabel(lab)
    axes[0].set_ylabel(f"Test accuracy ({ts})")
    fig.suptitle("Accuracy vs training cost")
    legend(fig, list(axes[:1]))
    return fig


def confusion_matrices(data: RunData, style: Styles) -> Figure:
    p = data.predictions.dropna(subset=["label", "prediction"])
    ts = p["test_set"].iloc[0]
    p = p[p["test_set"] == ts]
    names = [n for n in data.names if n in set(p["name"])]
    classes = class_names(data)
    k = len(classes)
    short = [c[:3] for c in classes]  # neg/neu/pos: three letters fit under a small panel
    ticks = short if len(set(short)) == k else [c[:8] for c in classes]
    ncol = min(4 if k <= 3 else 2, len(names))
    nrow = -(-len(names) // ncol)
    fig = new_figure(WIDTH, (1.9 if k <= 3 else 0.55 * k + 0.8) * nrow + 0.5)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        g = p[p["name"] == name]
        cm = confusion(g, k)
        ax.imshow(cm, cmap="Greys", vmin=0, vmax=max(cm.max(), 1))
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8 if k <= 4 else 6,
                    color="white" if v > cm.max() / 2 else "black")
        seeds = g["seed"].nunique()
        ax.set_title(data.pretty(name) + (f" ({seeds} seeds)" if seeds > 1 else ""))
        ax.set_xticks(range(k), ticks, rotation=0 if ticks is short else 45)
        ax.set_yticks(range(k), ticks)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
        ax.grid(False)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(f"Confusion matrices ({ts} test set, counts summed over seeds)")
    return fig


def distillation(data: RunData, style: Styles) -> Figure:
    students = distillation_names(data)
    names = list(dict.fromkeys([t for s in students if (t := teacher_of(data, s))] + students))
    ts = data.metrics["test_set"].iloc[0]
    m = data.metrics[(data.metrics["test_set"] == ts) & data.metrics["name"].isin(names)]
    fig = new_figure(WIDTH, 3.2)
    ax_size, ax_speed = fig.subplots(1, 2, sharey=True)
    speed = m["tweets_per_sec"] if "tweets_per_sec" in m.columns else pd.Series(np.nan, m.index)
    top = speed.max() if speed.notna().any() else 1.0
    for name in names:
        g = m[m["name"] == name]
        st = style(name)
        acc = g["accuracy"].mean()
        if "model_size_mb" in g.columns and g["model_size_mb"].notna().any():
            # Marker area ∝ inference speed, so the left panel alone shows all three quantities.
            sz = 30 + 220 * (g["tweets_per_sec"].mean() / top if "tweets_per_sec" in g else 0.3)
            ax_size.scatter(
                g["model_size_mb"].mean(),
                acc,
                s=sz,
                color=st["color"],
                marker=st["marker"],
                edgecolors="black",
                linewidths=0.5,
                label=data.pretty(name),
            )
            ax_size.annotate(
                data.pretty(name),
                (g["model_size_mb"].mean(), acc),
                textcoords="offset points",
                xytext=(6, 5),
                fontsize=6.5,
            )
        if "tweets_per_sec" in g.columns and g["tweets_per_sec"].notna().any():
            ax_speed.plot(
                g["tweets_per_sec"].mean(),
                acc,
                linestyle="none",
                markersize=6,
                color=st["color"],
                marker=st["marker"],
                markeredgecolor="black",
                markeredgewidth=0.5,
                label=data.pretty(name),
            )
            ax_speed.annotate(
                data.pretty(name),
                (g["tweets_per_sec"].mean(), acc),
                textcoords="offset points",
                xytext=(6, 5),
                fontsize=6.5,
            )
    for ax in (ax_size, ax_speed):
        ax.margins(x=0.15, y=0.1)
    ax_size.set_xlabel("Model size (MB); marker area ∝ tweets/s")
    ax_size.set_ylabel(f"Test accuracy ({ts})")
    ax_speed.set_xlabel("Inference speed (tweets/s)")
    fig.suptitle("Distillation: accuracy vs model size vs inference speed")
    legend(fig, [ax_speed, ax_size])
    return fig


def _plan(data: RunData) -> list[tuple[str, str, Callable[[RunData, Styles], Figure], str | None]]:
    """(key, title, builder, why it is skipped: None = draw it, "" = not applicable)."""
    has_metrics = not data.metrics.empty and data.has("metrics", "accuracy")
    epochs_ok = data.has("epochs", "val_accuracy") or data.has("epochs", "val_f1")
    cost_ok = data.has("results", "runtime_sec") or data.has("results", "peak_memory_mb")
    distill_ok = bool(distillation_names(data)) and data.has("metrics", "model_size_mb")
    preds_ok = data.has("predictions", "label") and data.has("predictions", "prediction")
    return [
        (
            "learning_curves",
            "Learning curves",
            learning_curves,
            None
            if epochs_ok
            else "validation accuracy/F1 per epoch not recorded — learning curves skipped",
        ),
        (
            "learning_curves_by_method",
            "Learning curves per method",
            learning_curves_by_method,
            None if epochs_ok else "per-method learning curves skipped (no epoch logs)",
        ),
        (
            "loss_curves",
            "Training and validation loss",
            loss_curves,
            None
            if data.has("epochs", "train_loss") or data.has("epochs", "val_loss")
            else "train/validation loss not recorded — loss curves skipped",
        ),
        (
            "peft_tradeoff",
            "Accuracy vs trainable parameters",
            peft_tradeoff,
            None
            if has_metrics and data.has("results", "trainable_params")
            else "trainable parameters not recorded — PEFT trade-off plot skipped",
        ),
        (
            "cost_tradeoff",
            "Accuracy vs training time and memory",
            cost_tradeoff,
            None
            if has_metrics and cost_ok
            else "test accuracy or training time/memory not recorded — cost plot skipped",
        ),
        (
            "confusion_matrices",
            "Confusion matrices",
            confusion_matrices,
            None if preds_ok else "no predictions — confusion matrices skipped",
        ),
        (
            "distillation",
            "Distillation trade-off",
            distillation,
            None
            if distill_ok
            else "model size not recorded for distilled models — distillation plot skipped"
            if distillation_names(data)
            else "",
        ),
    ]


def build_figures(data: RunData, folder: Path, dpi: int = 300) -> list[FigureFile]:
    """Draw and save every figure the data allows; each skipped figure adds a note."""
    style = Styles(data.names)
    out = []
    for key, title, builder, skip in _plan(data):
        if skip is not None:
            if skip:  # "" = not applicable (e.g. no distillation runs): nothing to say
                data.note(skip + ".")
            continue
        with matplotlib.rc_context(RC):
            fig = builder(data, style)
            png, pdf = save_figure(fig, folder, key, dpi)
        out.append(FigureFile(key, title, png, pdf))
    return out
