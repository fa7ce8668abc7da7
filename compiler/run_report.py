"""The report of `supernet run`: ``report.json`` (every figure) and ``report.html`` (self-contained).

Rules:
  1. ``report.json`` has ``original`` and ``subnetworks`` (each: ``accuracy`` top-1 %, ``macs``,
     ``params``, ``latency`` per target with p50/p90 ms and throughput, ``exports`` accuracy per
     format, ``speedup`` per target = original p90 / its p90), plus the search front, the
     hypervolume curve, the training metrics, the environment, stage wall times and the
     command that reproduces the run; ``training_plan`` (else null) when ``time_budget_s`` set
     the number of epochs, which another machine would set otherwise (the HTML says so).
  2. ``report.html`` opens offline: plots are inline PNG (matplotlib, Agg), no scripts, no links.
  3. `summary_table` is the text table `supernet run` prints at the end.
"""
from __future__ import annotations

import base64
import html
import io
import json
import platform
from typing import Any

from compiler.stages import RunContext, read_json, write_json

__all__ = ["stage_report", "build_report", "summary_table"]


def _model_entry(info: dict, latency: dict, original_latency: dict | None) -> dict:
    entry = {"accuracy": info["accuracy"], "macs": info["macs"], "params": info["params"],
             "latency": latency,
             "exports": {k: v["accuracy"] for k, v in info["artifacts"].items()},
             "exports_agree": all(v["agrees"] for v in info["artifacts"].values()),
             "artifacts": {k: v["path"] for k, v in info["artifacts"].items()}}
    if original_latency is not None:
        entry["speedup"] = {t: original_latency[t]["p90_ms"] / v["p90_ms"]
                            for t, v in latency.items() if t in original_latency}
        fp32 = {t.replace("-int8-", "-fp32-"): t for t in latency if "-int8-" in t}
        entry["int8_vs_original_fp32"] = {
            t: {"latency_x": original_latency[f]["p90_ms"] / latency[t]["p90_ms"],
                "throughput_x": latency[t]["throughput_ips"] / original_latency[f]["throughput_ips"]}
            for f, t in fp32.items() if f in original_latency}
        entry["macs_x"] = None
    for key in ("config", "role", "search_accuracy"):
        if key in info:
            entry[key] = info[key]
    return entry


def build_report(ctx: RunContext) -> dict:
    export = read_json(ctx.path("export", "done.json"))
    models, latency = export["models"], export["latency"]
    original = _model_entry(models["original"], latency["original"], None)
    subs = []
    for name in sorted(n for n in models if n != "original"):
        e = _model_entry(models[name], latency[name], latency["original"])
        e["name"] = name
        e["macs_x"] = original["macs"] / e["macs"]
        e["accuracy_delta_pt"] = e["accuracy"] - original["accuracy"]
        subs.append(e)
    search = read_json(ctx.path("search", "result.json"))
    stages = {s: read_json(ctx.path(s, "done.json")).get("wall_s")
              for s in ("original", "compile", "train", "search", "export")
              if ctx.path(s, "done.json").exists()}
    return {"format_version": 1, "original": original, "subnetworks": subs,
            "targets": sorted(latency["original"]),
            "search": {"objectives": search["objectives"], "validations": search["validations"],
                       "hypervolume": search["hypervolume"],
                       "front": [{"config": e["config"], "values": e["values"]}
                                 for e in search["pareto"]]},
            "training": _training_metrics(ctx), "environment": export.get("environment", {}),
            "python": platform.python_version(), "stage_wall_s": stages,
            "reproduce": _reproduce(ctx), "training_plan": _training_plan(ctx),
            "config": read_json(ctx.path("config.resolved.json"))}


def _reproduce(ctx: RunContext) -> str:
    import subprocess
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return (f"supernet run {ctx.source or ctx.path('config.resolved.json')} --force"
            f"   # code at git {commit}; every default filled in: "
            f"{ctx.path('config.resolved.json')}")


def _training_plan(ctx: RunContext) -> dict | None:
    """``training.time_budget_s``'s plan: how many epochs this machine trained, and why."""
    done = ctx.path("train", "done.json")
    return read_json(done).get("plan") if done.exists() else None


def _training_metrics(ctx: RunContext) -> list[dict]:
    path = ctx.path("train", "metrics.jsonl")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary_table(report: dict) -> str:
    """Rule 3: original vs chosen sub-networks, one row each."""
    targets = report["targets"]
    head = ["model", "top-1 %", "MACs (M)", "params (k)"] + [f"{t} p90 ms" for t in targets]
    rows = [head]
    for name, e in [("original", report["original"])] + [(s["name"], s) for s in report["subnetworks"]]:
        row = [name, f"{e['accuracy']:.2f}", f"{e['macs'] / 1e6:.2f}", f"{e['params'] / 1e3:.1f}"]
        for t in targets:
            p90 = e["latency"].get(t, {}).get("p90_ms")
            x = e.get("speedup", {}).get(t)
            row.append("-" if p90 is None else f"{p90:.3f}" + (f" ({x:.2f}x)" if x else ""))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], "", headline(report)])


def headline(report: dict) -> str:
    """One sentence: what the best sub-network within tolerance gained."""
    tol = report["config"]["export"]["tolerance_pt"]
    ok = [s for s in report["subnetworks"] if s["accuracy"] >= report["original"]["accuracy"] - tol]
    if not ok:
        return f"No chosen sub-network is within {tol:g} pt of the original's accuracy."
    best = min(ok, key=lambda s: s["macs"])
    gains = ", ".join(f"{x:.2f}x lower p90 latency on {t}" for t, x in best.get("speedup", {}).items())
    return (f"{best['name']}: top-1 {best['accuracy']:.2f}% ({best['accuracy_delta_pt']:+.2f} pt vs "
            f"the original's {report['original']['accuracy']:.2f}%) with {best['macs_x']:.2f}x "
            f"fewer MACs" + (f", {gains}" if gains else "") + ".")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(report: dict) -> dict[str, str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plots = {}
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    front = report["search"]["front"]
    if front and "accuracy" in front[0]["values"] and "macs" in front[0]["values"]:
        ax.scatter([f["values"]["macs"] / 1e6 for f in front],
                   [f["values"]["accuracy"] for f in front], s=14, label="search front (subset)")
    o = report["original"]
    ax.scatter([o["macs"] / 1e6], [o["accuracy"]], marker="*", s=160, c="red", label="original")
    subs = report["subnetworks"]
    ax.scatter([s["macs"] / 1e6 for s in subs], [s["accuracy"] for s in subs], marker="D",
               c="green", label="chosen (whole val set)")
    ax.set_xlabel("MACs (M)"), ax.set_ylabel("top-1 (%)"), ax.legend(fontsize=8), ax.grid(alpha=.3)
    plots["front_macs"] = _png(fig)
    plt.close(fig)
    for t in report["targets"][:2]:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        ax.scatter([o["latency"][t]["p90_ms"]], [o["accuracy"]], marker="*", s=160, c="red",
                   label="original")
        ax.scatter([s["latency"][t]["p90_ms"] for s in subs], [s["accuracy"] for s in subs],
                   marker="D", c="green", label="chosen")
        ax.set_xlabel(f"p90 latency (ms), {t}"), ax.set_ylabel("top-1 (%)"), ax.grid(alpha=.3)
        ax.legend(fontsize=8)
        plots[f"latency_{t}"] = _png(fig)
        plt.close(fig)
    hv = report["search"]["hypervolume"]
    if hv:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        ax.plot([h[0] for h in hv], [h[1] for h in hv])
        ax.set_xlabel("validations"), ax.set_ylabel("hypervolume"), ax.grid(alpha=.3)
        plots["hypervolume"] = _png(fig)
        plt.close(fig)
    metrics = [_flat(m) for m in report["training"]]
    series = sorted({k for m in metrics for k in m if k.startswith(("loss", "acc", "top1"))})
    if metrics and series:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        for k in series[:6]:
            ax.plot([m.get("epoch", i + 1) for i, m in enumerate(metrics) if k in m],
                    [m[k] for m in metrics if k in m], marker="o", label=k)
        ax.set_xlabel("epoch"), ax.set_title("super-network training"), ax.grid(alpha=.3)
        ax.legend(fontsize=7)
        plots["training"] = _png(fig)
        plt.close(fig)
    return plots


def _flat(metrics: dict, prefix: str = "") -> dict:
    """``{"loss": {"largest": 1.0}}`` -> ``{"loss.largest": 1.0}`` (numbers only)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def render_html(report: dict) -> str:
    """Rule 2."""
    esc = html.escape
    targets = report["targets"]
    head = "".join(f"<th>{esc(h)}</th>" for h in
                   ["model", "top-1 %", "MACs (M)", "MACs x", "params (k)", "exports agree"]
                   + [f"{t}: p50 / p90 ms, img/s, p90 speed-up" for t in targets])
    body = []
    for name, e in [("original", report["original"])] + [(s["name"], s) for s in report["subnetworks"]]:
        cells = [name, f"{e['accuracy']:.2f}", f"{e['macs'] / 1e6:.2f}",
                 "1.00" if name == "original" else f"{e['macs_x']:.2f}",
                 f"{e['params'] / 1e3:.1f}", "yes" if e["exports_agree"] else "NO"]
        for t in targets:
            lat = e["latency"].get(t)
            x = e.get("speedup", {}).get(t)
            cells.append("-" if lat is None else f"{lat['p50_ms']:.3f} / {lat['p90_ms']:.3f}, "
                         f"{lat['throughput_ips']:.0f}" + (f", <b>{x:.2f}x</b>" if x else ""))
        body.append("<tr>" + "".join(f"<td>{c if '<b>' in c else esc(c)}</td>" for c in cells)
                    + "</tr>")
    plots = "".join(f"<figure><img alt='{esc(k)}' src='data:image/png;base64,{v}'>"
                    f"<figcaption>{esc(k)}</figcaption></figure>" for k, v in _plots(report).items())
    env = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))[:200]}</td></tr>"
                  for k, v in report["environment"].items())
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:4px 8px;font-size:13px}th{background:#eee}"
             "figure{display:inline-block;margin:8px}img{max-width:520px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>supernet run report</title>"
            f"<style>{style}</style></head><body><h1>supernet run report</h1>"
            f"<p id='headline'>{esc(headline(report))}</p>"
            f"<h2>Original vs chosen sub-networks</h2><table id='summary'><tr>{head}</tr>"
            f"{''.join(body)}</table><h2>Plots</h2>{plots}"
            f"<h2>Search</h2><p>{report['search']['validations']} validations, "
            f"{len(report['search']['front'])} sub-networks on the front.</p>"
            f"<h2>Environment</h2><table id='environment'>{env}</table>"
            f"<h2>Reproduce</h2><pre>{esc(report['reproduce'])}</pre>{_plan_note(report)}"
            f"</body></html>")


def _plan_note(report: dict) -> str:
    plan = report.get("training_plan")
    if not plan:
        return ""
    return (f"<p id='training-plan'>Training was planned in wall time: {plan['epochs']:.3g} of "
            f"{plan['configured_epochs']:g} epochs fit time_budget_s={plan['time_budget_s']:g} at "
            f"{plan['seconds_per_step']:.3f} s per step on this machine; another machine trains "
            f"a different number of steps (train/plan.json).</p>")


def stage_report(ctx: RunContext) -> dict:
    report = build_report(ctx)
    write_json(ctx.path("report.json"), report)
    ctx.path("report.html").write_text(render_html(report))
    return {"report": str(ctx.path("report.html")), "table": summary_table(report)}
