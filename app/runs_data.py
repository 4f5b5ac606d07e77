"""The run store as pandas frames, for the pages and their tests. No streamlit here.

A broken run folder (missing or corrupt config.json / status.json, torn lines) never raises
from these functions: it shows up as a row with state "broken" and an ``error`` message.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import numbers
import os
from pathlib import Path

import pandas as pd

from resnet_core.config import TrainConfig
from resnet_core.models import parse_name
from resnet_core.store import Run, RunStore, StoreError, dedupe_steps

from .charts import run_color

KIND_NAMES = {"plain": "plain", "resnet": "ResNet", "preresnet": "pre-act ResNet"}
RUN_COLUMNS = [
    "id",
    "label",
    "kind",
    "depth",
    "family",
    "model",
    "dataset",
    "preset",
    "name",
    "state",
    "step",
    "total",
    "progress",
    "eta_s",
    "images_per_s",
    "message",
    "created",
    "test_error",
    "train_error",
    "shortcut",
    "width",
    "norm",
    "seed",
    "group",
    "error",
    "color",
    "node",
]
METRIC_COLUMNS = ["step", "epoch", "split", "loss", "error", "lr", "time", "images_per_s"]


def model_info(model: str) -> tuple[str, str, int | None]:
    """(family, kind, depth) of a model name; ("?", "?", None) when it can't be parsed."""
    try:
        return parse_name(model)
    except Exception:
        return "?", "?", None


def dataset_short(dataset) -> str:
    if not isinstance(dataset, str) or not dataset:
        return "?"
    if "/" in dataset or os.sep in dataset or dataset.endswith(".npz"):
        return Path(dataset).stem or dataset
    return dataset


def model_title(kind: str, depth) -> str:
    return f"{KIND_NAMES.get(kind, kind)}-{depth}" if depth else str(kind)


def run_label(run_id: str, cfg: dict) -> str:
    _, kind, depth = model_info(cfg.get("model", ""))
    title = model_title(kind, depth) if depth else (cfg.get("model") or "broken run")
    parts = [title, dataset_short(cfg.get("dataset"))]
    if cfg.get("name"):
        parts.append(str(cfg["name"])[:24])
    if cfg.get("seed") not in (None, 0):  # repeats over seeds tell apart by more than an id
        parts.append(f"seed {cfg['seed']}")
    return " · ".join(parts) + f" · {run_id[-6:]}"


def tail_rows(path: Path, nbytes: int = 65536) -> list[dict]:
    """The complete JSON lines in the last ``nbytes`` of a file (cheap on long logs)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - nbytes))
            data = f.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if size > nbytes:
        lines = lines[1:]  # the first line is probably cut
    rows = []
    for line in lines:
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(r, dict):
            rows.append(r)
    return rows


_FINALS: dict = {}  # (path, size, mtime_ns) -> final errors; logs only grow, so this is safe


def final_errors(run: Run) -> dict:
    """The last test error and the last training error of a run (eval-mode re-scoring when
    there is one, else the last logged training window), as fractions. Reads the log's tail
    backwards and parses only the lines it needs; memoized on the file's size and mtime."""
    path = run.path / "metrics.jsonl"
    try:
        st = os.stat(path)
        key = (str(path), st.st_size, st.st_mtime_ns)
    except OSError:
        return {"test_error": None, "train_error": None}
    if key in _FINALS:
        return _FINALS[key]
    out = {"test": None, "train": None, "train_eval": None}
    for nbytes in (16384, 262144, None):
        try:
            with open(path, "rb") as f:
                if nbytes is not None and st.st_size > nbytes:
                    f.seek(st.st_size - nbytes)
                data = f.read()
        except OSError:
            break
        lines = data.split(b"\n")
        if nbytes is not None and st.st_size > nbytes:
            lines = lines[1:]
        for line in reversed(lines):
            for split in [k for k, v in out.items() if v is None]:
                if f'"split": "{split}"'.encode() in line or f'"split":"{split}"'.encode() in line:
                    try:
                        err = json.loads(line).get("error")
                    except (ValueError, UnicodeDecodeError):
                        continue
                    if isinstance(err, (int, float)):
                        out[split] = float(err)
            if out["test"] is not None and out["train_eval"] is not None:
                break
        if (
            (out["test"] is not None and out["train_eval"] is not None)
            or nbytes is None
            or st.st_size <= (nbytes or 0)
        ):
            break
    res = {
        "test_error": out["test"],
        "train_error": out["train_eval"] if out["train_eval"] is not None else out["train"],
    }
    if len(_FINALS) > 4096:
        _FINALS.clear()
    _FINALS[key] = res
    return res


def runs_frame(store: RunStore, infos: list[dict] | None = None) -> pd.DataFrame:
    """One row per run folder, newest first. ``infos`` is store.list_runs() when given."""
    infos = store.list_runs() if infos is None else infos
    rows = []
    for info in infos:
        rid, cfg, st = info["id"], info.get("config") or {}, info.get("status") or {}
        family, kind, depth = model_info(cfg.get("model", ""))
        total = st.get("total")
        step = st.get("step") or 0
        row = {
            "id": rid,
            "label": run_label(rid, cfg),
            "kind": kind,
            "depth": depth,
            "family": family,
            "model": cfg.get("model"),
            "dataset": dataset_short(cfg.get("dataset")),
            "preset": cfg.get("preset"),
            "name": cfg.get("name"),
            "state": st.get("state", "broken"),
            "step": step,
            "total": total,
            "progress": (
                min(1.0, step / total)
                if isinstance(total, (int, float)) and total
                else (1.0 if st.get("state") == "done" else 0.0)
            ),
            "eta_s": st.get("eta_s"),
            "images_per_s": st.get("images_per_s"),
            "message": st.get("message") or "",
            "created": st.get("created"),
            "shortcut": cfg.get("shortcut"),
            "width": cfg.get("width"),
            "norm": cfg.get("norm"),
            "seed": cfg.get("seed"),
            "group": None if info.get("error") else seed_group(cfg),
            "error": info.get("error"),
            "node": st.get("node"),  # the Ray node it trains on (none: a process of this host)
        }
        if info.get("error"):
            row["test_error"] = row["train_error"] = None
        else:
            row.update(final_errors(Run(store.root, rid)))
        rows.append(row)
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    if df.empty:
        return df
    # one color per run: hue by family, shade by depth, a small hue shift for repeats
    df["_t"] = pd.to_numeric(df["created"], errors="coerce").fillna(0.0)
    df = df.sort_values(["_t", "id"]).reset_index(drop=True)
    variant = df.groupby(["kind", "depth"], dropna=False).cumcount()
    df["color"] = [run_color(k, d, int(v)) for k, d, v in zip(df["kind"], df["depth"], variant)]
    return df.iloc[::-1].drop(columns=["_t"]).reset_index(drop=True)


def metrics_frame(run: Run) -> pd.DataFrame:
    rows = run.read_metrics()
    df = pd.DataFrame(rows)
    for c in METRIC_COLUMNS:
        if c not in df.columns:
            df[c] = None
    df = df[df["step"].apply(lambda s: isinstance(s, (int, float)))] if len(df) else df
    for c in ("step", "epoch", "loss", "error", "lr", "time", "images_per_s"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df.reset_index(drop=True)


LAYER_COLUMNS = [
    "step",
    "layer",
    "type",
    "order",
    "std",
    "mean",
    "f_std",
    "x_std",
    "f_over_x",
    "out_grad_norm",
    "grad_norm",
    "weight_norm",
    "grad_to_weight",
    "dead_frac",
]


def layers_frame(run: Run) -> pd.DataFrame:
    rows = run.read_layers()
    df = pd.DataFrame(rows)
    for c in LAYER_COLUMNS:
        if c not in df.columns:
            df[c] = None
    if len(df):
        df = df[
            df["step"].apply(lambda s: isinstance(s, (int, float)))
            & df["layer"].apply(lambda s: isinstance(s, str))
        ]
    for c in LAYER_COLUMNS:
        if c not in ("layer", "type"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df.reset_index(drop=True)


def config_of(store: RunStore, run_id: str) -> dict:
    """A run's config.json as a dict (raises StoreError with a message when unreadable)."""
    return store.run(run_id).read_config_dict()


# --- repeats over seeds ----------------------------------------------------------------
# TrainConfig fields that do not change what a run learns. Two runs whose configs are equal on
# every other field "differ only in seed": they are repeats of one experiment, and Degradation,
# Runs and the Tour draw them as mean +- std. This is the one definition the pages share.
SEED_BLIND_FIELDS = frozenset(
    {
        "seed",  # what varies (it also draws the training subset and the validation split)
        "name",
        "preset",  # labels: a preset's values are already in the other fields
        "data_root",
        "download",  # where the same dataset is read from
        "device",
        "threads",
        "compile",
        "channels_last",  # the same arithmetic on other hardware
        "recorders",  # hooks that read activations and gradients, never change them
        "checkpoint_every",
        "checkpoint_steps",  # when weights are saved (resuming is exact)
    }
)
# Kept in the key on purpose: precision (bf16 changes the arithmetic), and log_every,
# eval_every, train_eval_size, test_size (they decide which points exist and what an error
# is measured on, so the seeds' curves line up step by step).
_FIELD_DEFAULTS = {
    f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
    for f in dataclasses.fields(TrainConfig)
}


def _canonical(v):
    """6 and 6.0 epochs are one budget (the Lab's number inputs give floats)."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v


def seed_group(cfg: dict) -> str | None:
    """The experiment a run belongs to: a hash of its config without SEED_BLIND_FIELDS. A field
    missing from an older config.json counts as its default, so old and new runs still group;
    a field this version does not know is kept (it may change training). None when the
    config is unreadable."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), str):
        return None
    key = {k: _canonical(v) for k, v in {**_FIELD_DEFAULTS, **cfg}.items() if k not in SEED_BLIND_FIELDS}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def seed_sets(runs: pd.DataFrame) -> pd.Series:
    """For each run (row of ``runs_frame``, or of ``ui.reference_df``), the key of the runs it
    is averaged with: the finished runs of one experiment (``group``) from one source (your
    store, or one bundled reference set). A run that is not done stands alone: its last error
    is not final, and a failed or diverged seed is shown as itself."""
    if not len(runs):
        return pd.Series([], dtype=object)
    ref = runs["reference"].fillna("") if "reference" in runs.columns else pd.Series("", index=runs.index)
    group = runs["group"] if "group" in runs.columns else pd.Series(None, index=runs.index)
    return pd.Series(
        [
            f"{r}|{g}" if s == "done" and isinstance(g, str) and g else f"run|{i}"
            for i, g, s, r in zip(runs["id"], group, runs["state"], ref)
        ],
        index=runs.index,
        dtype=object,
    )


SEED_GROUP_COLUMNS = [
    "set",
    "label",
    "kind",
    "depth",
    "model",
    "dataset",
    "reference",
    "state",
    "color",
    "n_runs",
    "seeds",
    "run_ids",
    "width",
    "shortcut",
    "norm",
    "test_error_mean",
    "test_error_std",
    "test_error_n",
    "train_error_mean",
    "train_error_std",
    "train_error_n",
]


def _stats(values) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1, n) of the finite values, in percent; std is NaN below
    two values."""
    v = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").astype(float) * 100.0
    v = v[v.notna()]
    n = len(v)
    return (float(v.mean()) if n else math.nan, float(v.std(ddof=1)) if n >= 2 else math.nan, n)


def _group_label(first, n: int) -> str:
    if n == 1:
        return first["label"]
    ref = first.get("reference")
    if isinstance(ref, str) and ref:  # a reference run's label names its set, not a run id
        base = " · ".join(p for p in str(first["label"]).split(" · ") if not p.startswith("seed "))
    else:
        base = " · ".join(
            [model_title(first["kind"], first["depth"]), str(first["dataset"])]
            + ([str(first["name"])[:24]] if isinstance(first.get("name"), str) and first["name"] else [])
        )
    return f"{base} · {n} seeds"


def seed_groups(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per set of ``seed_sets``: mean, standard deviation (ddof=1) and n of the final
    test and training errors (in percent) of its runs, with their seeds and ids. A set of one
    run is that run (its label, color and state)."""
    if not len(runs):
        return pd.DataFrame(columns=SEED_GROUP_COLUMNS)
    df = runs.assign(set=seed_sets(runs))
    rows = []
    for key, g in df.groupby("set", sort=False):
        first = g.iloc[0]
        row = {
            c: first.get(c)
            for c in ("kind", "depth", "model", "dataset", "width", "shortcut", "norm", "color")
        }
        row.update(
            set=key,
            label=_group_label(first, len(g)),
            n_runs=len(g),
            reference=first.get("reference") if isinstance(first.get("reference"), str) else "",
            state=first["state"],
            # in seed order, so that with every seed known run_ids[i] is the run of seeds[i]
            run_ids=list(g.sort_values("seed", na_position="last", kind="stable")["id"]),
            seeds=sorted(int(x) for x in g["seed"] if isinstance(x, (int, float)) and x == x),
        )
        for split in ("test", "train"):
            m, sd, n = _stats(g[f"{split}_error"])
            row.update({f"{split}_error_mean": m, f"{split}_error_std": sd, f"{split}_error_n": n})
        rows.append(row)
    out = pd.DataFrame(rows, columns=SEED_GROUP_COLUMNS)
    # one color per set of seeds: the family's hue and the depth's shade, shifted for a second
    # experiment of the same model (as run colors are)
    multi = out["n_runs"] > 1
    variant = out[multi].groupby(["kind", "depth"], dropna=False).cumcount()
    out.loc[multi, "color"] = [
        run_color(k, d, int(v)) for k, d, v in zip(out.loc[multi, "kind"], out.loc[multi, "depth"], variant)
    ]
    dup = out["label"].duplicated(keep=False) & multi
    out.loc[dup, "label"] = out.loc[dup, "label"] + " · cfg " + out.loc[dup, "set"].str[-4:]
    return out


def newest_groups(runs: pd.DataFrame, k: int) -> pd.DataFrame:
    """The runs (newest first) of the ``k`` newest experiments: a page's default selection,
    so that all seeds of a set are picked or none."""
    if not len(runs):
        return runs
    sets = seed_sets(runs)
    keep = list(dict.fromkeys(sets))[:k]
    return runs[sets.isin(keep)]


def fmt_mean_std(mean, std, n) -> str:
    """ "8.51 ± 0.22 (5)", "8.75 (1)", or "–" without a value."""
    if not isinstance(n, numbers.Real) or n != n or n < 1 or mean != mean:  # numpy ints too
        return "–"
    return f"{mean:.2f} ± {std:.2f} ({int(n)})" if n >= 2 else f"{mean:.2f} ({int(n)})"


# the image channels and classes of the named datasets, for parameter counts; a file dataset
# (.npz, ImageFolder) is counted at 3 channels and 10 classes, the paper's CIFAR-10 shape
_DATA_SHAPES = {"digits": (1, 10), "mnist": (1, 10), "fashion_mnist": (1, 10), "cifar100": (3, 100)}


@functools.lru_cache(maxsize=256)
def param_count(model: str, width=None, shortcut=None, norm=None, dataset: str = "") -> int | None:
    """Parameters of ``model`` as a run builds it (width, shortcut, norm, its dataset's channels
    and classes). Built once per process (ResNet-1202 takes about a second; the meta device
    was slower still here)."""
    from resnet_core.models import build_model, count_params

    ch, classes = _DATA_SHAPES.get(dataset, (3, 10))
    try:
        net = build_model(
            model, width=width, shortcut=shortcut, norm=norm, in_channels=ch, num_classes=classes
        )
    except (ValueError, TypeError):
        return None
    return count_params(net)


def _params_text(n) -> str:
    if not isinstance(n, int):
        return "–"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"  # 0.27M as Table 6; 5.1k


# the columns a page shows of ``table6_frame`` (the rest are the same numbers for the CSV)
TABLE6_COLUMNS = [
    "net",
    "depth (layers)",
    "params",
    "test error (%) mean ± std (n)",
    "training error (%) mean ± std (n)",
    "dataset",
    "seeds",
]


def table6_frame(groups: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 6 layout, one row per experiment (``seed_groups``): the net, its depth
    in weighted layers, its parameters, and the final test and training errors as mean ± std
    (n), then the same numbers as plain columns (for the CSV). Sorted by family, then depth."""
    cols = [
        *TABLE6_COLUMNS,
        "state",
        "params_count",
        "test_error_mean",
        "test_error_std",
        "test_error_n",
        "train_error_mean",
        "train_error_std",
        "train_error_n",
        "label",
        "reference",
    ]
    if not len(groups):
        return pd.DataFrame(columns=cols)
    g = groups.copy()
    g["_kind"] = g["kind"].map({"plain": 0, "resnet": 1, "preresnet": 2}).fillna(3)
    g = g.sort_values(["reference", "_kind", "depth", "label"], na_position="last")
    counts = [
        param_count(
            m,
            int(w) if isinstance(w, (int, float)) and w == w else None,
            s if isinstance(s, str) else None,
            n if isinstance(n, str) else None,
            d if isinstance(d, str) else "",
        )
        if isinstance(m, str)
        else None
        for m, w, s, n, d in zip(g["model"], g["width"], g["shortcut"], g["norm"], g["dataset"])
    ]
    out = pd.DataFrame(
        {
            "net": [model_title(k, d) for k, d in zip(g["kind"], g["depth"])],
            "depth (layers)": g["depth"],
            "params": [_params_text(c) for c in counts],
            "test error (%) mean ± std (n)": [
                fmt_mean_std(m, s, n)
                for m, s, n in zip(g["test_error_mean"], g["test_error_std"], g["test_error_n"])
            ],
            "training error (%) mean ± std (n)": [
                fmt_mean_std(m, s, n)
                for m, s, n in zip(g["train_error_mean"], g["train_error_std"], g["train_error_n"])
            ],
            "dataset": g["dataset"],
            "seeds": [", ".join(map(str, x)) for x in g["seeds"]],
            "state": g["state"],
            "params_count": counts,
            **{
                c: g[c]
                for c in (
                    "test_error_mean",
                    "test_error_std",
                    "test_error_n",
                    "train_error_mean",
                    "train_error_std",
                    "train_error_n",
                    "label",
                    "reference",
                )
            },
        }
    )
    return out[cols].reset_index(drop=True)


__all__ = [
    "runs_frame",
    "metrics_frame",
    "layers_frame",
    "final_errors",
    "run_label",
    "model_info",
    "model_title",
    "dataset_short",
    "tail_rows",
    "config_of",
    "StoreError",
    "dedupe_steps",
    "SEED_BLIND_FIELDS",
    "seed_group",
    "seed_sets",
    "seed_groups",
    "newest_groups",
    "fmt_mean_std",
    "param_count",
    "table6_frame",
]


# --- when depth starts to pay (the deeper ResNet's training error falls below the shallower's) ---


def _mean_curve(metrics: pd.DataFrame, run_ids, split: str, smooth: int) -> pd.Series:
    """Error (%) per step of one split, averaged over ``run_ids`` (seeds) at the steps every
    run has; with ``smooth`` > 1, a trailing rolling mean over that many rows first."""
    curves = []
    for rid in run_ids:
        g = metrics[(metrics["run_id"] == rid) & (metrics["split"] == split)]
        s = g.groupby("step")["error"].mean().sort_index() * 100
        if smooth > 1:
            s = s.rolling(smooth, min_periods=1).mean()
        curves.append(s)
    if not curves:
        return pd.Series(dtype=float)
    return pd.concat(curves, axis=1, join="inner").mean(axis=1)


def depth_crossing(metrics: pd.DataFrame, deep_ids, shallow_ids, smooth: int = 5) -> dict:
    """Deeper minus shallower training error (percentage points) against steps, and the step
    after which it stays below zero. Uses the periodic eval-mode re-scoring (split
    ``train_eval``) where both sides have at least three common evaluations, else the running
    training error (split ``train``) smoothed over ``smooth`` logging windows.

    Returns {"split", "diff": Series step -> points, "stays_below_from": step or None,
    "last": last difference or None}. ``stays_below_from`` is the first step from which every
    later difference on the series is negative; None when the last one is not."""
    for split, sm in (("train_eval", 1), ("train", smooth)):
        deep = _mean_curve(metrics, deep_ids, split, sm)
        shallow = _mean_curve(metrics, shallow_ids, split, sm)
        diff = (deep - shallow).dropna()
        if len(diff) >= 3 or split == "train":
            break
    if not len(diff):
        return {"split": split, "diff": diff, "stays_below_from": None, "last": None}
    below = (diff < 0).to_numpy()
    since = None
    if below[-1]:
        i = len(below) - 1
        while i > 0 and below[i - 1]:
            i -= 1
        since = int(diff.index[i])
    return {"split": split, "diff": diff, "stays_below_from": since, "last": float(diff.iloc[-1])}
