from .blocks import BasicBlock, Bottleneck, PreActBlock, ShortcutA, Tap, blocks_of, taps_of
from .net import ResNet
from .registry import (
    ACCEPTED_FORMS,
    ModelNameError,
    build_model,
    check_model_options,
    is_residual,
    list_models,
    model_depth,
    parse_name,
)
from .summary import count_macs, count_params, summary
from .variants import ACTIVATIONS, BRANCH_SCALARS, INITS

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PreActBlock",
    "ShortcutA",
    "Tap",
    "blocks_of",
    "taps_of",
    "ResNet",
    "ACCEPTED_FORMS",
    "ModelNameError",
    "build_model",
    "is_residual",
    "list_models",
    "model_depth",
    "parse_name",
    "check_model_options",
    "ACTIVATIONS",
    "BRANCH_SCALARS",
    "INITS",
    "count_macs",
    "count_params",
    "summary",
]
