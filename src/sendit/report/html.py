"""The self-contained `index.html` (inline CSS, images as data URIs, no scripts, no network) and
`report.md`. Every string that comes from a file — tweets, configs, method names — is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from html import escape

import pandas as pd

from sendit.report.classes import class_names
from sendit.report.figures import FigureFile
from sendit.report.load import RunData
from sendit.report.stats import ACROSS_SEEDS_METHOD, HOLM_METHOD, ONE_SEED_METHOD, StatsConfig
from sendit.report.tables import Table, to_markdown

# Forbid scripts outright: even an escaping bug could then not run code.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0 auto;
max-width:1100px;padding:1.5rem;color:#111;line-height:1.45;background:#fff}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #333;padding-bottom:.2rem;margin-top:2.2rem}
.sub{color:#555;margin-top:0}nav a{margin-right:1rem}
table{border-collapse:collapse;margin:.6rem 0 1.4rem;font-size:.86rem}
caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{padding:.25rem .6rem;text-align:right;white-space:nowrap}th{white-space:normal;
vertical-align:bottom}th.l,td.l{text-align:left}
thead th{border-top:2px solid #111;border-bottom:1px solid #111}
tbody tr:last-child td{border-bottom:2px solid #111}tbody tr:nth-child(even){background:#f4f4f4}
.scroll{overflow-x:auto}figure{margin:1rem 0 2rem}figure img{max-width:100%;height:auto;
border:1px solid #ddd}figcaption{color:#444;font-size:.9rem}
pre{background:#f6f6f6;border:1px solid #ddd;padding:.6rem;overflow-x:auto;font-size:.8rem;
max-height:28rem}.notes li{color:#6b4500}.verdicts li{margin:.2rem 0}
td.text{white-space:normal;text-align:left;max-width:40rem}summary{cursor:pointer;margin:.6rem 0}
table.kv th,table.kv td{text-align:left;border:0;white-space:normal}table.kv th{padding-right:1.5rem}
table.kv tbody tr:last-child td{border-bottom:0}
"""


@dataclass
class Page:
    """What the page and report.md show."""

    data: RunData
    tables: list[Table]
    figures: list[FigureFile]
    stats: dict[str, pd.DataFrame]
    cfg: StatsConfig
    recommendation: str = ""  # report/recommend.py: the sentence the report ends with


def _e(x: object) -> str:
    return escape(str(x), quote=True)


def _is_number(text: object) -> bool:
    return bool(re.match(r"^\[?[-–]?\d|^–$", str(text)))


def _table_html(t: Table) -> str:
    # Text columns (method, test set) align left, numbers right, as in a printed table.
    cls = ["" if t.shown[c].map(_is_number).all() else ' class="l"' for c in t.shown.columns]
    head = "".join(f"<th{k}>{_e(c)}</th>" for k, c in zip(cls, t.shown.columns))
    rows = "".join(
        "<tr>" + "".join(f"<td{k}>{_e(v)}</td>" for k, v in zip(cls, row)) + "</tr>"
        for row in t.shown.itertuples(index=False)
    )
    return (
        f'<div class="scroll"><table id="table-{_e(t.key)}"><caption>{_e(t.title)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _figure_html(f: FigureFile) -> str:
    data = base64.b64encode(f.png.read_bytes()).decode("ascii")
    return (
        f'<figure id="figure-{_e(f.key)}"><img src="data:image/png;base64,{data}" alt="{_e(f.title)}">'
        f"<figcaption>{_e(f.title)} — files: figures/{_e(f.key)}.png, figures/{_e(f.key)}.pdf"
        "</figcaption></figure>"
    )


def verdict_groups(page: Page) -> list[tuple[str, list[str]]]:
    """(heading, verdicts): across seeds first when there are several seeds, then within each seed."""
    groups = []
    sp, pairs = page.stats["seed_pairs"], page.stats["pairs"]
    if not sp.empty:
        for ts, g in sp.groupby("test_set", sort=False):
            groups.append((f"Test set {ts}: the methods, across {g['seeds'].max()} seeds", list(g["verdict"])))
    if not pairs.empty:
        for (ts, seed), g in pairs.groupby(["test_set", "seed"], sort=False):
            groups.append((f"Test set {ts}: these trained models, seed {seed}", list(g["verdict"])))
    return groups


def console_lines(page: Page) -> list[str]:
    """What the console says after a report: each verdict group (what it is about in its heading) and the
    recommendation; the per-seed verdicts only when there is no across-seed group."""
    groups = verdict_groups(page)
    if any("across" in head for head, _ in groups):
        groups = [(h, v) for h, v in groups if "across" in h]
    lines = [f"{head}:\n" + "\n".join(f"  - {v}" for v in vs) for head, vs in groups]
    return lines + ([f"recommendation: {page.recommendation}"] if page.recommendation else [])


def _method_text(cfg: StatsConfig, multi_seed: bool) -> str:
    text = (
        f"Confidence intervals: metric intervals are percentile bootstraps, {cfg.n_boot} resamples of the test "
        f"rows, seed {cfg.seed}; differences are in accuracy points with {int(cfg.level * 100)}% intervals, and "
        "p comes from the same statistic. " + ONE_SEED_METHOD + " " + HOLM_METHOD
    )
    return text + (" " + ACROSS_SEEDS_METHOD if multi_seed else "")


def _sentiment(label: object, classes: list[str]) -> str:
    try:
        i = int(label)
    except (TypeError, ValueError):
        return str(label)
    return classes[i] if 0 <= i < len(classes) else str(label)


def _examples_html(data: RunData, per_method: int = 5) -> str:
    p = data.predictions
    if p.empty or not {"text", "label", "prediction"} <= set(p.columns):
        return "<p>No tweet texts recorded.</p>"
    parts, classes = [], class_names(data)
    for name in data.names:
        g = p[(p["name"] == name) & (p["label"] != p["prediction"])]
        if g.empty:
            continue
        g = g[(g["seed"] == g["seed"].min()) & (g["test_set"] == g["test_set"].iloc[0])]
        rows = "".join(
            f'<tr><td class="text">{_e(r.text)}</td><td>{_e(_sentiment(r.label, classes))}</td>'
            f"<td>{_e(_sentiment(r.prediction, classes))}</td>"
            + (f"<td>{r.prob_positive:.3f}</td>" if "prob_positive" in g.columns else "")
            + "</tr>"
            for r in g.head(per_method).itertuples()
        )
        prob = "<th>P(positive)</th>" if "prob_positive" in g.columns else ""
        parts.append(
            f"<table><caption>{_e(data.pretty(name))} — {_e(g['test_set'].iloc[0])} test set</caption>"
            f"<thead><tr><th class='l'>Tweet</th><th>True</th><th>Predicted</th>{prob}</tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    return "".join(parts) or "<p>No misclassified tweets.</p>"


def _kv_table(d: dict) -> str:
    def show(v: object) -> str:
        return ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(show(v))}</td></tr>" for k, v in d.items() if v is not None
    )
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _manifest_html(data: RunData) -> str:
    parts = []
    for run, m in data.manifests.items():
        keys = ("started", "finished", "wall_time_sec", "git_commit", "methods", "seeds")
        html = _kv_table({k: m.get(k) for k in keys})
        for key in ("status", "models", "hardware", "versions", "data", "config"):
            value = m.get(key)
            if value is None:
                continue
            flat = isinstance(value, dict) and not any(
                isinstance(v, (dict, list)) for v in value.values()
            )
            body = (
                _kv_table(value)
                if flat
                else f"<pre>{_e(json.dumps(value, indent=2, default=str))}</pre>"
            )
            html += f"<h4>{_e(key.capitalize())}</h4>{body}"
        parts.append(f"<h3>Run {_e(run)}</h3>{html}")
    for run, text in data.configs.items():
        if run not in data.manifests:
            parts.append(f"<h3>Run {_e(run)} — config.yaml</h3><pre>{_e(text)}</pre>")
    return "".join(parts) or "<p>No run.json or config.yaml in the run folders.</p>"


def render_html(page: Page) -> str:
    data = page.data
    runs = sorted(set(data.results["run"])) if "run" in data.results else []
    groups = [
        f"<h3>{_e(head)}</h3><ul class='verdicts'>"
        + "".join(f"<li>{_e(v)}</li>" for v in vs)
        + "</ul>"
        for head, vs in verdict_groups(page)
    ]
    n_across = (
        page.stats["seed_pairs"]["test_set"].nunique() if not page.stats["seed_pairs"].empty else 0
    )
    if (
        n_across and len(groups) > n_across
    ):  # per-seed verdicts fold away under the across-seed ones
        groups[n_across:] = [
            "<details><summary>Verdicts within each seed</summary>"
            + "".join(groups[n_across:])
            + "</details>"
        ]
    verdicts = "".join(groups) or "<p>No pair of methods shares test rows.</p>"
    notes = "".join(f"<li>{_e(n)}</li>" for n in data.notes) or "<li>None.</li>"
    sections = [
        (
            "verdicts",
            "Is the difference real?",
            f"<p>{_e(_method_text(page.cfg, data.multi_seed))}</p>" + verdicts,
        ),
        ("tables", "Tables", "".join(_table_html(t) for t in page.tables)),
        ("figures", "Figures", "".join(_figure_html(f) for f in page.figures) or "<p>None.</p>"),
        ("examples", "Misclassified examples", _examples_html(data)),
        ("notes", "Notes", f"<ul class='notes'>{notes}</ul>"),
        ("config", "Run configuration, hardware and versions", _manifest_html(data)),
    ]
    if page.recommendation:
        sections.append(("recommendation", "Recommendation", f"<p><strong>{_e(page.recommendation)}</strong></p>"))
    nav = "".join(f'<a href="#{key}">{_e(title)}</a>' for key, title, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{_e(t)}</h2>{html}</section>' for key, t, html in sections
    )
    methods = ", ".join(data.pretty(n) for n in data.names)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>SEND-IT report — {_e(', '.join(runs))}</title><style>{CSS}</style></head><body>"
        f"<h1>SEND-IT report</h1><p class='sub'>Runs: {_e(', '.join(runs))} · Methods: {_e(methods)}"
        f"</p><nav>{nav}</nav>{body}</body></html>\n"
    )


def render_markdown(page: Page) -> str:
    data = page.data
    lines = ["# SEND-IT report", "", "Methods: " + ", ".join(data.pretty(n) for n in data.names), ""]
    lines += ["## Is the difference real?", "", _method_text(page.cfg, data.multi_seed), ""]
    for head, vs in verdict_groups(page):
        lines += [f"**{head}**", ""] + [f"- {v}" for v in vs] + [""]
    lines += ["## Tables", ""]
    for t in page.tables:
        lines += [f"**{t.title}**", "", to_markdown(t)]
    lines += ["## Figures", ""]
    lines += [f"![{f.title}](figures/{f.key}.png)\n" for f in page.figures]
    if data.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in data.notes] + [""]
    for run, m in data.manifests.items():
        lines += [f"## Run {run}", ""]
        for key in ("hardware", "versions"):
            if isinstance(m.get(key), dict):
                lines.append(f"- {key}: " + ", ".join(f"{k} {v}" for k, v in m[key].items()))
        lines.append("")
    if page.recommendation:
        lines += ["## Recommendation", "", f"**{page.recommendation}**", ""]
    return "\n".join(lines)
