"""Results of a streaming run: the per-segment table (terminal), results.csv, results.json and PNG plots."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

# (column, header, format) of the table printed as segments finish
TABLE = [("policy", "policy", "{:>11}"), ("segment", "seg", "{:>3}"), ("n_users", "users", "{:>7}"),
         ("n_items", "items", "{:>7}"), ("eval_users", "eval", "{:>6}"), ("recall@20", "R@20", "{:>7.4f}"),
         ("ndcg@20", "N@20", "{:>7.4f}"), ("params", "params", "{:>10}"), ("bytes", "bytes", "{:>11}"),
         ("mean_width", "mean_w", "{:>6.2f}"), ("batches", "batches", "{:>7}"), ("wall_s", "wall_s", "{:>7.1f}")]

METRICS = [f"{m}@{k}" for k in (5, 10, 20) for m in ("recall", "ndcg")]


def table_header() -> str:
    widths = [len(fmt.format(0 if "f" in fmt else "")) for _, _, fmt in TABLE]
    return " ".join(h.rjust(w) for (_, h, _), w in zip(TABLE, widths))


def table_row(row: dict) -> str:
    return " ".join(fmt.format(row[key]) for key, _, fmt in TABLE)


def summarize(rows: list[dict]) -> dict:
    """Per policy: plain means over the scored segments t >= 1 (segment 0 is the warm-up, as in SCALL; a
    one-segment stream scores its only segment) of the metrics and of the seconds a segment took, the
    evaluated users of a scored segment (least, most), the most parameters and bytes any segment held, and the
    seconds of all its segments (segment 0 included)."""
    out = {}
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == policy]
        scored = [r for r in mine if r["segment"] >= 1] or mine
        users = [int(r["eval_users"]) for r in scored]
        out[policy] = {**{m: float(np.nanmean([r[m] for r in scored])) for m in METRICS},
                       "segments_scored": len(scored), "eval_users": int(sum(users)),
                       "eval_users_min": min(users), "eval_users_max": max(users),
                       "max_params": max(r["params"] for r in mine), "max_bytes": max(r["bytes"] for r in mine),
                       "segment_s": float(np.mean([r["wall_s"] for r in scored])),
                       "total_s": float(sum(r["wall_s"] for r in mine))}
    return out


def summary_table(summary: dict) -> str:
    lines = [f"{'policy':>11} {'R@20':>7} {'N@20':>7} {'R@10':>7} {'N@10':>7} {'segs':>4} {'users/seg':>9} "
             f"{'max_params':>10} {'max_bytes':>11} {'s/seg':>6} {'total_s':>7}"]
    for policy, s in summary.items():
        users = f"{s['eval_users_min']}-{s['eval_users_max']}"
        lines.append(f"{policy:>11} {s['recall@20']:>7.4f} {s['ndcg@20']:>7.4f} {s['recall@10']:>7.4f} "
                     f"{s['ndcg@10']:>7.4f} {s['segments_scored']:>4} {users:>9} {s['max_params']:>10} "
                     f"{s['max_bytes']:>11} {s['segment_s']:>6.1f} {s['total_s']:>7.1f}")
    return "\n".join(lines)


def paired_differences(rows: list[dict], metric: str = "recall@20") -> dict:
    """Per policy other than the reference (uniform when it ran, else the first policy): the mean difference of
    `metric` from the reference's over the scored segments both ran, and in how many it was higher."""
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    reference = "uniform" if "uniform" in policies else policies[0]
    by = {(r["policy"], r["segment"]): r[metric] for r in rows}
    scored = sorted({r["segment"] for r in rows if r["segment"] >= 1}) or sorted({r["segment"] for r in rows})
    out = {}
    for policy in policies:
        diffs = [by[policy, t] - by[reference, t] for t in scored if (policy, t) in by and (reference, t) in by]
        if policy != reference and diffs:
            out[policy] = {"reference": reference, "metric": metric, "mean_difference": float(np.mean(diffs)),
                           "higher": int(sum(d > 0 for d in diffs)), "segments": len(diffs)}
    return out


def summary_lines(rows: list[dict], budget: str) -> list[str]:
    """What the terminal shows at the end of a run: the summary table with its units, and each policy against
    the reference segment by segment."""
    lines = [f"budget {budget}; max_params: float32 parameters (the paper's unit: 250,000 a MB); max_bytes: "
             "what the tables held (weights, Adam state, 16 bytes of metadata a row)",
             "mean over segments t >= 1 (s/seg too; total_s: every segment, segment 0 included)",
             summary_table(summarize(rows))]
    for policy, d in paired_differences(rows).items():
        lines.append(f"{policy} - {d['reference']}: Recall@20 {d['mean_difference']:+.4f} on average, higher in "
                     f"{d['higher']} of {d['segments']} segments")
    return lines


def write_csv(rows: list[dict], path) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_json(payload: dict, path) -> None:
    def clean(value):  # NaN is not JSON
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value
    with open(path, "w") as f:
        json.dump(clean(payload), f, indent=1)
        f.write("\n")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def quality_title(payload: dict) -> str:
    """The quality plot's title: the data, the model and the budget the policies shared."""
    return (f"{payload.get('source', '?')}: {payload.get('model', '?')}, d_max {payload.get('d_max', '?')}, "
            f"budget {payload.get('budget', '?')}")


def plot_quality(rows: list[dict], path, title: str = "") -> None:
    """Recall@20 and NDCG@20 per segment, one line per policy; under each segment the users it evaluated
    (few users make small differences noise)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    users = {}
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == policy]
        for r in mine:
            users.setdefault(r["segment"], r["eval_users"])
        for ax, metric in zip(axes, ("recall@20", "ndcg@20")):
            ax.plot([r["segment"] for r in mine], [r[metric] for r in mine], marker="o", label=policy)
    segments = sorted(users)
    for ax, metric in zip(axes, ("Recall@20", "NDCG@20")):
        ax.set_xticks(segments, [f"{t}\n{users[t]}" for t in segments], fontsize=7)
        ax.set_xlabel("segment / users evaluated")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sizes(sizes: dict, path) -> None:
    """Embedding width against frequency rank at the last segment, users and items, one line per policy.
    `sizes[policy] = (user_widths, user_freq, item_widths, item_freq)` as numpy arrays."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for policy, (uw, uf, iw, if_) in sizes.items():
        for ax, widths, freq in ((axes[0], uw, uf), (axes[1], iw, if_)):
            n = len(freq)
            order = np.lexsort((-np.arange(n), -np.asarray(freq)))  # most frequent first, newest first on ties
            ax.plot(np.arange(1, n + 1), np.asarray(widths)[order], ".", ms=2, label=policy)
    for ax, side in zip(axes, ("users", "items")):
        ax.set_xscale("log")
        ax.set_xlabel(f"{side} by frequency rank (last segment)")
        ax.set_ylabel("embedding width")
        ax.grid(alpha=0.3)
    axes[0].legend(markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_agent(rows: list[dict], path) -> None:
    """The deployed action of each learning policy per segment: the power-law shapes and the user share."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for policy in dict.fromkeys(r["policy"] for r in rows if "alpha_user" in r):
        mine = [r for r in rows if "alpha_user" in r and r["policy"] == policy]
        seg = [r["segment"] for r in mine]
        axes[0].plot(seg, [r["alpha_user"] for r in mine], marker="o", label=f"{policy}: alpha users")
        axes[0].plot(seg, [r["alpha_item"] for r in mine], marker="s", label=f"{policy}: alpha items")
        axes[1].plot(seg, [r["user_share"] for r in mine], marker="o", label=policy)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("alpha (smaller: more skewed sizes)")
    axes[1].set_ylabel("user share of the budget")
    axes[1].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("segment")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(out: Path, rows: list[dict], payload: dict, sizes: dict) -> list[Path]:
    """results.csv, results.json (payload + rows + summary), quality.png, sizes.png in `out`, and agent.png
    when a learning policy ran."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.csv", out / "results.json", out / "quality.png", out / "sizes.png"]
    write_csv(rows, paths[0])
    write_json({**payload, "segments": rows, "summary": summarize(rows)}, paths[1])
    plot_quality(rows, paths[2], quality_title(payload))
    plot_sizes(sizes, paths[3])
    if any("alpha_user" in r for r in rows):
        paths.append(out / "agent.png")
        plot_agent(rows, paths[-1])
    return paths
