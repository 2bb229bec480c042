"""``latentlab compare``: read runs back from MLflow and tabulate and plot a sweep.

Groups the finished runs by the parameters that vary between them (seed aside), and
reports each metric's mean, standard deviation and range over seeds, the best
configuration (by mean; by default of ``exported/acc``, the method each run exported) and
the best single run. Plots each metric against the
latent size, one line per architecture (or whatever else varies), with the range
over seeds as error bars and the raw-pixel baselines as dashed lines.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from latentlab import metric_names as M
from latentlab import tracking
from latentlab.choices import MODELS
from latentlab.errors import LatentlabError

# Each autoencoder method's scores, then its paired gain over its raw twin (per run, so that
# over seeds the mean, std and range are those of the per-seed differences).
DEFAULT_METRICS = (f"{M.AUTOENCODER_SELFLABEL}/acc", f"{M.AUTOENCODER_SELFLABEL}/nmi",
                   f"gain/{M.AUTOENCODER_SELFLABEL}/acc", f"gain/{M.AUTOENCODER_SELFLABEL}/nmi",
                   f"{M.AUTOENCODER}/acc", f"{M.AUTOENCODER}/nmi", f"gain/{M.AUTOENCODER}/acc",
                   f"gain/{M.AUTOENCODER}/nmi", f"{M.AUTOENCODER_KMEANS}/acc", f"gain/{M.AUTOENCODER_KMEANS}/acc",
                   "recon_mse")
# Methods that run only when turned on (dec.enabled): reported when some run has them.
OPTIONAL_METRICS = tuple(f"{g}{m}/{s}" for m in M.OPTIONAL if not M.is_raw(m) for g in ("", "gain/")
                         for s in ("acc", "nmi"))
# Runs of data without labels have only label-free scores: these stand in for the defaults.
LABEL_FREE_METRICS = (f"{M.AUTOENCODER}/silhouette", f"{M.AUTOENCODER}/davies_bouldin",
                      f"{M.FINAL}/silhouette", f"{M.FINAL}/davies_bouldin", "recon_mse")
# The scores of the method each run exported (evaluate logs them from export.method): what
# ranks configurations, so that a k-means preset run that exports DEC is judged by DEC.
EXPORTED = ("exported/acc", "exported/nmi")
EXPORT_PARAM = "params.export.method"
# Per task: the metrics reported, and the one that picks the best (higher is better).
TASK_METRICS = {
    "cluster": (DEFAULT_METRICS, EXPORTED[0]),
    "anomaly": (("test/auroc", "test/auprc", "unbalanced/auprc", "unbalanced/f1"), "test/auroc"),
}


def default_experiment(task: str) -> str:
    """The experiment conf/config.yaml names for the task's runs."""
    from omegaconf import OmegaConf

    from latentlab.config import CONF_DIR

    tracking_cfg = OmegaConf.load(CONF_DIR / "config.yaml").tracking
    return tracking_cfg["experiment" if task == "cluster" else "anomaly_experiment"]
BASELINES = M.RAW_METHODS
# Parameters that differ between runs without changing what was computed.
IGNORED = {"params.data.mirror", "params.data.cache", "params.seed"}
LATENT = "params.model.latent_dim"


class NothingToCompare(LatentlabError):
    pass


@dataclass
class Report:
    runs: pd.DataFrame            # one row per finished run
    summary: pd.DataFrame         # one row per configuration: mean/std/min/max/n of each metric
    group_by: list[str]           # the params that vary between configurations
    best_run: pd.Series
    best_config: dict[str, float]  # mean of each metric over the seeds of the best configuration
    best_config_name: str
    failed: int
    text: str
    files: list[Path] = field(default_factory=list)


def _connect(experiment: str, uri: str | None) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri or tracking.tracking_uri())
    if mlflow.get_experiment_by_name(experiment) is None:
        raise NothingToCompare(f"no MLflow experiment {experiment!r} at {mlflow.get_tracking_uri()} "
                               "(set MLFLOW_TRACKING_URI, or --experiment)")


def load_runs(*, experiment: str, parent_run_id: str | None = None, uri: str | None = None) -> pd.DataFrame:
    """Runs of an experiment (or of one sweep) as a DataFrame, parents left out."""
    import mlflow

    _connect(experiment, uri)
    filt = f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}'" if parent_run_id else ""
    df = mlflow.search_runs(experiment_names=[experiment], filter_string=filt, max_results=50000)
    tag = f"tags.{tracking.SWEEP_TAG}"
    if tag in df.columns:
        df = df[df[tag].fillna("") != "parent"]
    return df.reset_index(drop=True)


def sweep_command(parent_run_id: str) -> str | None:
    """The command that ran a sweep (``latentlab -m`` and its overrides, from its parent
    run's tags), for a report to say how to make its runs again; None when not recorded."""
    import mlflow

    overrides = mlflow.MlflowClient().get_run(parent_run_id).data.tags.get(tracking.OVERRIDES_TAG)
    if overrides is None:
        return None
    return "latentlab -m" + ("" if overrides == tracking.NO_OVERRIDES else f" {overrides}")


def latest_sweep(experiment: str, uri: str | None = None) -> str:
    import mlflow

    _connect(experiment, uri)
    df = mlflow.search_runs(experiment_names=[experiment], filter_string=f"tags.`{tracking.SWEEP_TAG}` = 'parent'",
                            order_by=["start_time DESC"], max_results=1)
    if df.empty:
        raise NothingToCompare(f"no sweep (parent run) in experiment {experiment!r} at {mlflow.get_tracking_uri()}; "
                               "run one with `latentlab -m ...`")
    return str(df["run_id"].iloc[0])


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    if "params.model._target_" in df.columns:  # the architecture, as `model=` names it
        df["params.model"] = df.pop("params.model._target_").map(lambda t: MODELS.get(t, t))
    if LATENT in df.columns:
        df[LATENT] = pd.to_numeric(df[LATENT])
    return df


def _exported(df: pd.DataFrame) -> pd.DataFrame:
    """Runs logged before evaluate logged ``exported/*`` exported ``autoencoder_selflabel``:
    their scores stand in."""
    for e in EXPORTED:
        final = f"metrics.{M.FINAL}/{e.split('/')[1]}"
        if final in df.columns:
            df[f"metrics.{e}"] = df[f"metrics.{e}"].fillna(df[final]) if f"metrics.{e}" in df.columns else df[final]
    return df


def summarize(runs: pd.DataFrame, metrics: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Per configuration (params that vary, seed aside): mean, std, min, max and n of each metric."""
    params = [c for c in runs.columns if c.startswith("params.") and c not in IGNORED]
    group_by = [c for c in params if runs[c].astype(str).nunique() > 1]
    # A param that follows from the others (conv's decoder_hidden, mlp's input_dropout in a
    # model=mlp,conv sweep) names no configuration of its own: leave it out of the key.
    for c in [c for c in group_by if c not in ("params.model", LATENT)]:
        others = [o for o in group_by if o != c]
        if others and (runs[group_by].astype(str).groupby(others)[c].nunique() <= 1).all():
            group_by.remove(c)
    if LATENT in group_by:  # latent size last: it is the x axis
        group_by = [c for c in group_by if c != LATENT] + [LATENT]
    keyed = runs.assign(_all="all runs (no param varies)") if not group_by else runs
    g = keyed.groupby(group_by or ["_all"], sort=True)[metrics]
    summary = g.agg(["mean", "std", "min", "max"])
    summary.columns = [f"{m} {s}" for m, s in summary.columns]
    summary.insert(0, "runs", g.size())
    return summary.reset_index(), group_by


def _markdown(summary: pd.DataFrame, group_by: list[str], metrics: list[str]) -> str:
    keys = group_by or ["_all"]
    head = [k.removeprefix("params.") for k in group_by] or ["configuration"]
    head += ["runs"] + metrics
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in summary.iterrows():  # (a row Series casts an int key to float when the rest is: .at keeps it)
        cells = [str(summary.at[i, k]) for k in keys] + [str(int(r["runs"]))]
        for m in metrics:
            if not np.isfinite(r[f"{m} mean"]):  # a method this configuration did not run
                cells.append("-")
                continue
            std = r[f"{m} std"]
            spread = f" ± {std:.3f}" if np.isfinite(std) else ""
            cells.append(f"{r[f'{m} mean']:.3f}{spread} [{r[f'{m} min']:.3f}, {r[f'{m} max']:.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(runs: pd.DataFrame, summary: pd.DataFrame, group_by: list[str], metric: str, path: Path) -> Path:
    from latentlab.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if LATENT in group_by:
        series = [c for c in group_by if c != LATENT]
        groups = summary.groupby(series, sort=True) if series else [((), summary)]
        for key, s in groups:
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{c.removeprefix('params.')}={v}" for c, v in zip(series, key)) or "runs"
            mean, lo, hi = s[f"{metric} mean"], s[f"{metric} min"], s[f"{metric} max"]
            ax.errorbar(s[LATENT], mean, yerr=[mean - lo, hi - mean], marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ticks = sorted(summary[LATENT].unique())
        ax.set_xticks(ticks, [str(int(t)) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("latent size (model.latent_dim)")
    else:
        labels = [", ".join(str(summary.at[i, c]) for c in group_by) or "all runs" for i in summary.index]
        mean = summary[f"{metric} mean"]
        err = [mean - summary[f"{metric} min"], summary[f"{metric} max"] - mean]
        ax.bar(range(len(summary)), mean, yerr=err, capsize=3)
        ax.set_xticks(range(len(summary)), labels, rotation=30, ha="right")
    method, _, score = metric.partition("/")
    if method in M.TWINS:  # the raw twin: what the same procedure gives without the autoencoder
        col = f"metrics.{M.TWINS[method]}/{score}"
        if col in runs.columns and runs[col].notna().any():
            ax.axhline(runs[col].mean(), color="grey", linestyle="--", label=f"{M.TWINS[method]} (raw twin)")
    if method == "gain":
        ax.axhline(0.0, color="grey", linestyle="--", label="level with the raw twin")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean over seeds, bars = min..max")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # beside the axes: a legend inside hides the lines it names
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save_figure(fig, path)


def _twin_plot(runs: pd.DataFrame, path: Path, scope: str) -> Path | None:
    """Each autoencoder method beside its raw twin over the given runs (mean, whiskers min..max)."""
    from latentlab.plots import twin_bars, twin_rows

    def col(n: str, s: str) -> str:  # logged runs carry "metrics.<m>/<s>", tidy tables "<m>/<s>"
        return f"metrics.{n}/{s}" if f"metrics.{n}/{s}" in runs.columns else f"{n}/{s}"

    names = {n for pair in M.TWINS.items() for n in pair}
    per_run = [{n: {s: row[col(n, s)] for s in ("acc", "nmi") if col(n, s) in runs.columns} for n in names}
               for _, row in runs.iterrows()]
    rows = twin_rows(per_run, M.TWINS)
    if not rows:
        return None
    return twin_bars(rows, path, title=f"each autoencoder method beside its raw twin: {scope} "
                                       f"({len(runs)} runs; whiskers min..max)")


def compare(*, experiment: str = "latentlab", parent_run_id: str | None = None, out_dir: str | Path,
            metrics: tuple[str, ...] = DEFAULT_METRICS, rank_by: str = EXPORTED[0],
            uri: str | None = None) -> Report:
    """Write runs.csv, summary.csv, summary.md and one plot per metric into ``out_dir``."""
    raw = load_runs(experiment=experiment, parent_run_id=parent_run_id, uri=uri)
    scope = f"sweep {parent_run_id}" if parent_run_id else f"experiment {experiment!r}"
    if raw.empty:
        raise NothingToCompare(f"no runs in {scope}")
    failed = int((raw["status"] != "FINISHED").sum())
    runs = _exported(_tidy(raw[raw["status"] == "FINISHED"]))
    if metrics == DEFAULT_METRICS and f"metrics.{metrics[0]}" not in runs.columns \
            and f"metrics.{LABEL_FREE_METRICS[0]}" in runs.columns:
        # Unlabelled data: no ACC/NMI anywhere; compare by the silhouette instead (evaluate measures it
        # in a PCA of the inputs, one space for every run, whatever its latent size or architecture).
        metrics, rank_by = LABEL_FREE_METRICS, f"{M.FINAL}/silhouette"
    if metrics == DEFAULT_METRICS:  # DEC's columns when some run has them (the k-means preset's method)
        present = [m for m in OPTIONAL_METRICS if f"metrics.{m}" in runs.columns and runs[f"metrics.{m}"].notna().any()]
        metrics = (*metrics[:-1], *present, metrics[-1])
        if EXPORT_PARAM in runs.columns and (runs[EXPORT_PARAM].fillna(M.FINAL) != M.FINAL).any():
            metrics = (*EXPORTED, *metrics)  # the runs export different methods: show what ranked them
    cols = [f"metrics.{m}" for m in metrics]
    missing = [m for m, c in zip(metrics, cols) if c not in runs.columns]
    if runs.empty or missing:
        raise NothingToCompare(f"{scope}: {len(runs)} finished runs, {failed} not finished"
                               + (f"; no metric {missing} logged" if missing and not runs.empty else ""))
    if f"metrics.{rank_by}" not in runs.columns:
        raise LatentlabError(f"--rank-by {rank_by!r} is not a logged metric; try one of {list(metrics)}")
    scored = [*metrics, *([] if rank_by in metrics else [rank_by])]  # the ranking one even when not shown
    runs = runs.rename(columns={f"metrics.{m}": m for m in scored})
    summary, group_by = summarize(runs, scored)
    best_run = runs.loc[runs[rank_by].idxmax()]
    best_at = summary[f"{rank_by} mean"].idxmax()
    best_cfg = summary.loc[best_at]
    best_key = {c: summary.at[best_at, c] for c in group_by}  # in the column's own type (int latent sizes)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep = ["run_id", "tags.mlflow.runName", "status", *group_by, "params.seed", *metrics]
    runs[[c for c in keep if c in runs.columns]].to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    table = _markdown(summary, group_by, list(metrics))
    cfg_desc = ", ".join(f"{c.removeprefix('params.')}={best_key[c]}" for c in group_by) or "all runs"
    made_by = sweep_command(parent_run_id) if parent_run_id else None
    text = "\n".join([
        f"# {scope}: {len(runs)} finished runs" + (f", {failed} failed or unfinished" if failed else ""),
        *(["", f"Made by `{made_by}`; read back by `latentlab compare --sweep {parent_run_id}`."] if made_by else []),
        "", "mean ± std [min, max] over seeds", "", table, "",
        f"best configuration by mean {rank_by}: {cfg_desc} ({best_cfg[f'{rank_by} mean']:.4f} over "
        f"{int(best_cfg['runs'])} runs)",
        f"best single run: {best_run['run_id']} ({best_run.get('tags.mlflow.runName', '')}) "
        f"{rank_by} {best_run[rank_by]:.4f}",
    ])
    (out / "summary.md").write_text(text + "\n")
    files = [out / "runs.csv", out / "summary.csv", out / "summary.md"]
    files += [_plot(runs, summary, group_by, m, out / f"{m.replace('/', '_')}.png") for m in metrics]
    best = runs
    for c in group_by:
        best = best[best[c].astype(str) == str(best_key[c])]
    twins = _twin_plot(best, out / "twins.png", f"best configuration ({cfg_desc})" if group_by else "all runs")
    files += [twins] if twins else []
    return Report(runs=runs, summary=summary, group_by=group_by, best_run=best_run,
                  best_config={m: float(best_cfg[f"{m} mean"]) for m in scored}, best_config_name=cfg_desc,
                  failed=failed, text=text, files=files)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="latentlab compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=list(TASK_METRICS), default="cluster",
                   help="which runs: clustering (default) or anomaly detection; sets the defaults below")
    p.add_argument("--experiment", help="MLflow experiment (default: latentlab, or latentlab-anomaly for "
                   "--task anomaly)")
    p.add_argument("--sweep", metavar="RUN_ID", help="a sweep's parent run id, or 'latest'; "
                   "default: every run of the experiment (DVC runs included)")
    p.add_argument("--out", type=Path, default=Path("compare"), help="output folder (default: ./compare)")
    p.add_argument("--metric", action="append", dest="metrics", help="metric to report (repeatable); default: "
                   + "; ".join(f"{t}: {' '.join(m)}" for t, (m, _) in TASK_METRICS.items()))
    p.add_argument("--rank-by", help="metric that picks the best (higher is better); default: "
                   + "; ".join(f"{t}: {r}" for t, (_, r) in TASK_METRICS.items()))
    p.add_argument("--log-to-parent", action="store_true", help="also attach the outputs to the sweep's parent run")
    a = p.parse_args(argv)
    metrics, rank_by = TASK_METRICS[a.task]
    experiment = a.experiment or default_experiment(a.task)
    try:
        parent = latest_sweep(experiment) if a.sweep == "latest" else a.sweep
        report = compare(experiment=experiment, parent_run_id=parent, out_dir=a.out,
                         metrics=tuple(a.metrics or metrics), rank_by=a.rank_by or rank_by)
    except LatentlabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.text)
    print(f"\nwrote {', '.join(str(f) for f in report.files)}")
    if a.log_to_parent:
        if not parent:
            print("error: --log-to-parent needs --sweep", file=sys.stderr)
            return 2
        import mlflow

        client = mlflow.MlflowClient(tracking.tracking_uri())
        with tracking.store_lock():
            for f in report.files:
                client.log_artifact(parent, str(f), artifact_path="compare")
    return 0
