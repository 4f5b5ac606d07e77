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
from .activations import activation_stats, feature_maps, fig7, layer_responses
from .evaluation import confusion_matrix, error_curves, evaluate_checkpoint, per_class_error
from .jobs import cancel, compute, get_or_start, status
from .progress import Cancelled
from .recorders import LayerStatsRecorder, default_schedule, layer_stats, read_layer_stats

__all__ = ["LayerStatsRecorder", "default_schedule", "layer_stats", "read_layer_stats",
           "activation_stats", "feature_maps", "fig7", "layer_responses", "confusion_matrix",
           "error_curves", "evaluate_checkpoint", "per_class_error", "cancel", "compute",
           "get_or_start", "status", "Cancelled"]
