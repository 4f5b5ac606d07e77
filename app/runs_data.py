"""The run store as pandas frames, for the pages and their tests. No streamlit here.

A broken run folder (missing or corrupt config.json / status.json, torn lines) never raises
from these functions: it shows up as a row with state "broken" and an ``error`` message.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from resnet_core.models import parse_name
from resnet_core.store import Run, RunStore, StoreError, dedupe_steps

from .charts import run_color

KIND_NAMES = {"plain": "plain", "resnet": "ResNet", "preresnet": "pre-act ResNet"}
RUN_COLUMNS = ["id", "label", "kind", "depth", "family", "model", "dataset", "preset", "name",
               "state", "step", "total", "progress", "eta_s", "images_per_s", "message",
               "created", "test_error", "train_error", "shortcut", "width", "seed", "error",
               "color"]
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
        if (out["test"] is not None and out["train_eval"] is not None) or nbytes is None \
                or st.st_size <= (nbytes or 0):
            break
    res = {"test_error": out["test"],
           "train_error": out["train_eval"] if out["train_eval"] is not None else out["train"]}
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
        row = {"id": rid, "label": run_label(rid, cfg), "kind": kind, "depth": depth,
               "family": family, "model": cfg.get("model"),
               "dataset": dataset_short(cfg.get("dataset")), "preset": cfg.get("preset"),
               "name": cfg.get("name"), "state": st.get("state", "broken"), "step": step,
               "total": total,
               "progress": (min(1.0, step / total) if isinstance(total, (int, float)) and total
                            else (1.0 if st.get("state") == "done" else 0.0)),
               "eta_s": st.get("eta_s"), "images_per_s": st.get("images_per_s"),
               "message": st.get("message") or "", "created": st.get("created"),
               "shortcut": cfg.get("shortcut"), "width": cfg.get("width"),
               "seed": cfg.get("seed"), "error": info.get("error")}
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


LAYER_COLUMNS = ["step", "layer", "type", "order", "std", "mean", "f_std", "x_std", "f_over_x",
                 "out_grad_norm", "grad_norm", "weight_norm", "grad_to_weight", "dead_frac"]


def layers_frame(run: Run) -> pd.DataFrame:
    rows = run.read_layers()
    df = pd.DataFrame(rows)
    for c in LAYER_COLUMNS:
        if c not in df.columns:
            df[c] = None
    if len(df):
        df = df[df["step"].apply(lambda s: isinstance(s, (int, float)))
                & df["layer"].apply(lambda s: isinstance(s, str))]
    for c in LAYER_COLUMNS:
        if c not in ("layer", "type"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df.reset_index(drop=True)


def config_of(store: RunStore, run_id: str) -> dict:
    """A run's config.json as a dict (raises StoreError with a message when unreadable)."""
    return store.run(run_id).read_config_dict()


__all__ = ["runs_frame", "metrics_frame", "layers_frame", "final_errors", "run_label",
           "model_info", "model_title", "dataset_short", "tail_rows", "config_of", "StoreError",
           "dedupe_steps"]
