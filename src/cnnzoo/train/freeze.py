"""Freezing part of a network for fine-tuning: ``--freeze-backbone`` and ``--freeze PREFIX[,PREFIX]``.

A frozen module's parameters get ``requires_grad=False``, so they get no gradient, the optimizer never
holds them (no update, no weight decay, no momentum) and DDP leaves them alone; its BatchNorm layers are
kept in eval mode, so their running statistics stay as they were loaded (``model.train()`` sets every
layer back to training mode: :meth:`Freezing.train_mode` is what the training loop calls instead).

``--freeze-backbone`` freezes everything but the classifier (the model's ``get_classifier()``, the layer
that computes the logits) and the auxiliary classifiers of GoogLeNet and Inception v3, which only feed
their own losses. ``--freeze`` takes module names as ``model.named_modules()`` gives them; a prefix
freezes the module and everything in it (``layer1`` freezes ``layer1.0.conv1`` ..., not ``layer10``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .config import TrainOptionError

__all__ = ["Freezing", "classifier_name", "freeze_modules"]


@dataclass
class Freezing:
    """What was frozen: parameter names, and the normalisation layers that stay in eval mode."""

    parameters: list[str] = field(default_factory=list)
    norms: list[nn.Module] = field(default_factory=list)

    def train_mode(self, net: nn.Module) -> None:
        """``net.train()``, then the frozen normalisation layers back to eval mode (running statistics untouched)."""
        net.train()
        for m in self.norms:
            m.eval()


def classifier_name(model: nn.Module) -> str:
    """The module name of the layer that computes the logits: the backbone API's ``get_classifier()``, or
    else the last ``nn.Linear``."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    for name, m in reversed(list(model.named_modules())):
        if (m is head) if head is not None else isinstance(m, nn.Linear):
            return name
    raise TrainOptionError(
        "--freeze-backbone", True, f"a model with a classifier layer ({type(model).__name__} has none)"
    )


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def freeze_modules(model: nn.Module, *, backbone: bool, prefixes: str | None) -> Freezing:
    """Freeze ``model``'s backbone (all but its classifier and auxiliary heads) and/or the modules under
    ``prefixes`` (comma-separated names); an unknown name is refused with the model's top-level names."""
    wanted = [p.strip() for p in (prefixes or "").split(",") if p.strip()]
    names = [n for n, _ in model.named_modules() if n]
    for p in wanted:
        if not any(_under(n, p) for n in names):
            top = ", ".join(n for n, _ in model.named_children())
            raise TrainOptionError(
                "--freeze",
                p,
                f"a module name of {getattr(model, 'model_name', type(model).__name__)}, e.g. one of {top}",
            )
    keep = [classifier_name(model), *getattr(model, "aux_heads", ())] if backbone else []

    def frozen(name: str) -> bool:
        if any(_under(name, p) for p in wanted):
            return True
        return backbone and not any(_under(name, k) for k in keep)

    out = Freezing()
    for name, p in model.named_parameters():
        if frozen(name):
            p.requires_grad_(False)
            out.parameters.append(name)
    for name, m in model.named_modules():
        if name and isinstance(m, nn.modules.batchnorm._NormBase) and frozen(name):
            out.norms.append(m)
    return out
