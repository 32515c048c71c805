"""Silence third-party messages a V-Zero user cannot act on, and only those.

- TRL's generation helper reads transformers' deprecated `is_gradient_checkpointing` (TRL and transformers are pinned
  exactly, so nobody but a TRL release can change the call): a `FutureWarning` at the first generation and again after
  every save, which resets Python's once-per-location warning registry.
- On a machine without CUDA, transformers advises installing `causal_conv1d` and `flash-linear-attention` for Qwen3.5's
  Gated-DeltaNet layers: both are CUDA kernels, so there is nothing to install. With CUDA the advice stays.
"""

import logging
import warnings

import torch


def _drop_cpu_kernel_advice(record: logging.LogRecord) -> bool:
    return "for the optimized kernel" not in record.getMessage()


def silence_unactionable_warnings() -> None:
    """Install the filters described in the module docstring (idempotent)."""
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    if not torch.cuda.is_available():
        logger = logging.getLogger("transformers.integrations.hub_kernels")
        if _drop_cpu_kernel_advice not in logger.filters:
            logger.addFilter(_drop_cpu_kernel_advice)
