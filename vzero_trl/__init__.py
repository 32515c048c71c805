"""V-Zero for Hugging Face TRL: answer-label-free on-policy distillation with contrastive evidence gating."""

__version__ = "0.1.0.dev0"
__all__ = ["VZeroConfig", "VZeroTrainer"]


def __getattr__(name: str):
    # Imported on first use, so that the light modules (crops, schema, toy.synthetic) and their command lines do not pay
    # for torch, transformers and trl.
    if name == "VZeroConfig":
        from .config import VZeroConfig

        return VZeroConfig
    if name == "VZeroTrainer":
        from .trainer import VZeroTrainer

        return VZeroTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
