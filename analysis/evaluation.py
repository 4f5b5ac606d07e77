"""Where a checkpoint errs, and how training and test error move together.

- :func:`confusion_matrix` / :func:`per_class_error`: from labels and predictions;
- :func:`evaluate_checkpoint`: both for a stored run's checkpoint on its test set;
- :func:`error_curves`: training error (running, train mode), training error re-scored in
  eval mode, and test/val error against step, from metrics.jsonl: degradation is a rise of
  *training* error with depth, not overfitting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .loading import heldout_batch, load, predict


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts: rows are true classes, columns predicted classes."""
    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def per_class_error(cm: np.ndarray, classes=None) -> pd.DataFrame:
    """Per true class: support, errors, error rate, and the class it is most confused with."""
    classes = list(classes) if classes is not None else [str(i) for i in range(len(cm))]
    rows = []
    for i, c in enumerate(classes):
        n = int(cm[i].sum())
        off = cm[i].copy()
        off[i] = 0
        rows.append(
            {
                "class": c,
                "index": i,
                "n": n,
                "errors": int(off.sum()),
                "error": float(off.sum() / n) if n else float("nan"),
                "most_confused_with": classes[int(off.argmax())] if off.sum() else None,
            }
        )
    return pd.DataFrame(rows)


def evaluate_checkpoint(run, checkpoint: str = "last", n: int | None = None) -> dict:
    """Confusion matrix, per-class error, overall error and predictions on the test set."""
    model, ds = load(run, checkpoint)
    x, y = heldout_batch(ds, n)
    logits = predict(model, x)
    pred = logits.argmax(1).numpy()
    cm = confusion_matrix(y.numpy(), pred, ds.num_classes)
    return {
        "confusion": cm,
        "per_class": per_class_error(cm, ds.classes),
        "error": float((pred != y.numpy()).mean()),
        "pred": pred,
        "y": y.numpy(),
        "classes": list(ds.classes),
    }


def error_curves(run) -> pd.DataFrame:
    """Wide table: step, then one error column per split present (train, train_eval, test,
    val), from the run's metrics.jsonl."""
    df = pd.DataFrame(run.read_metrics())
    if df.empty or "split" not in df:
        return pd.DataFrame(columns=["step"])
    df = df.dropna(subset=["error"])
    wide = df.pivot_table(index="step", columns="split", values="error", aggfunc="last")
    wide.columns.name = None
    return wide.reset_index()


def degradation_summary(runs: dict) -> pd.DataFrame:
    """For {label: run}: final training error (eval mode where recorded) and test error, and
    their gap; deeper plain nets show higher *training* error, not a larger gap."""
    rows = []
    for label, run in runs.items():
        c = error_curves(run)
        if c.empty:
            continue
        last = c.ffill().iloc[-1]
        tr = last.get("train_eval", last.get("train"))
        te = last.get("test")
        rows.append(
            {
                "run": label,
                "step": int(last["step"]),
                "train_error": tr,
                "test_error": te,
                "gap": (te - tr) if tr is not None and te is not None else None,
            }
        )
    return pd.DataFrame(rows)
