"""Analysis of plain and residual nets: data out (DataFrames, arrays, dicts), nothing drawn.

Never imports streamlit or plotly. The main entry points:

- recorded during training: :class:`analysis.recorders.LayerStatsRecorder` (named in
  ``TrainConfig.recorders``), read back with :func:`read_layer_stats`;
- on a checkpoint: :func:`fig7`, :func:`layer_responses`, :func:`activation_stats`,
  :func:`feature_maps`, :func:`evaluate_checkpoint`, :func:`error_curves`, embeddings
  (:mod:`analysis.embeddings`), attributions (:mod:`analysis.attribution`);
- cached and background work: :func:`get_or_start`, :func:`status`, :func:`cancel`
  (:mod:`analysis.jobs`);
- studies: :mod:`analysis.studies.signal`, :mod:`~analysis.studies.lesion`,
  :mod:`~analysis.studies.shattering`, :mod:`~analysis.studies.landscape`.

Heavy optional packages (captum, umap-learn) are imported only where used.
"""

import importlib

# Resolved on first use (PEP 562), so `analysis.recorders` -- which a run attaches by import
# path -- needs only torch: a bare GPU box without pandas, captum or umap still records.
_EXPORTS = {
    "activation_stats": "activations",
    "feature_maps": "activations",
    "fig7": "activations",
    "layer_responses": "activations",
    "confusion_matrix": "evaluation",
    "error_curves": "evaluation",
    "evaluate_checkpoint": "evaluation",
    "per_class_error": "evaluation",
    "cancel": "jobs",
    "compute": "jobs",
    "get_or_start": "jobs",
    "status": "jobs",
    "Cancelled": "progress",
    "LayerStatsRecorder": "recorders",
    "default_schedule": "recorders",
    "layer_stats": "recorders",
    "read_layer_stats": "recorders",
}


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


__all__ = [
    "LayerStatsRecorder",
    "default_schedule",
    "layer_stats",
    "read_layer_stats",
    "activation_stats",
    "feature_maps",
    "fig7",
    "layer_responses",
    "confusion_matrix",
    "error_curves",
    "evaluate_checkpoint",
    "per_class_error",
    "cancel",
    "compute",
    "get_or_start",
    "status",
    "Cancelled",
]
