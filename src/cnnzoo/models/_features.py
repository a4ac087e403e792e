"""``features_only``: a zoo network cut after a stage, returning the feature map at each stage's end.

As timm's ``FeatureListNet``: :class:`FeatureExtractor` holds the network's own modules (the same
parameter objects) under the same names, so its state-dict keys are the full network's minus the
head and the stages after the last one asked for, and a checkpoint of the full network loads into it
(:func:`cnnzoo.load_pretrained` ignores the keys it has no place for, and says so). It replays the
network's main path (:meth:`ZooModel.main_path`) up to the last stage asked for and returns the maps,
in network order. Which maps there are is the family's table (:meth:`ZooModel.feature_stages`);
:attr:`FeatureExtractor.feature_info` describes those chosen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ._base import CheckedModule, FeatureStage, ZooModel


class FeatureInfo:
    """What each returned map is: ``channels()``, ``reduction()``, ``module_name()`` (timm's methods).

    Each takes an optional index into the returned list and otherwise gives the list; ``out_indices``
    are the stage numbers in the network's full table.
    """

    def __init__(self, stages: Sequence[FeatureStage], out_indices: Sequence[int]) -> None:
        self.stages = list(stages)
        self.out_indices = tuple(out_indices)

    def _pick(self, field: str, idx: int | None) -> Any:
        values = [getattr(s, field) for s in self.stages]
        return values if idx is None else values[idx]

    def channels(self, idx: int | None = None) -> Any:
        return self._pick("channels", idx)

    def reduction(self, idx: int | None = None) -> Any:
        return self._pick("reduction", idx)

    def module_name(self, idx: int | None = None) -> Any:
        return self._pick("module", idx)

    def get_dicts(self) -> list[dict[str, Any]]:
        """timm's layout: one ``dict(num_chs, reduction, module, index)`` per map."""
        return [
            dict(num_chs=s.channels, reduction=s.reduction, module=s.module, index=i)
            for s, i in zip(self.stages, self.out_indices, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.stages)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.get_dicts())

    def __repr__(self) -> str:
        rows = ", ".join(f"{s.module} ({s.channels} ch, /{s.reduction})" for s in self.stages)
        return f"FeatureInfo([{rows}])"


def resolve_out_indices(model_name: str, out_indices: Sequence[int] | None, count: int) -> list[int]:
    """Stage numbers in network order: all by default, negative ones counted from the end, each once."""
    if out_indices is None:
        return list(range(count))
    if isinstance(out_indices, int) or not all(isinstance(i, int) and not isinstance(i, bool) for i in out_indices):
        raise ValueError(
            f"{model_name}: out_indices must be a sequence of stage numbers, e.g. (1, 2, 3); got {out_indices!r}"
        )
    bad = [i for i in out_indices if not -count <= i < count]
    if bad or not out_indices:
        raise ValueError(
            f"{model_name}: out_indices {tuple(out_indices)!r}: {model_name} has {count} feature stages, "
            f"numbered 0..{count - 1} (or -{count}..-1 from the end); give at least one"
        )
    resolved = [i % count for i in out_indices]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"{model_name}: out_indices {tuple(out_indices)!r} names a stage twice")
    return sorted(resolved)


class FeatureExtractor(CheckedModule):
    """A zoo network returning the list of feature maps at the ends of the stages ``out_indices`` (all by default).

    Built from the network itself, whose modules it shares (build the network headless, with
    ``num_classes=0``, so as not to allocate a classifier only to drop it; ``cnnzoo.create_model(name,
    features_only=True)`` does). Auxiliary classifiers are not on the main path and are left out.
    """

    def __init__(self, model: ZooModel, out_indices: Sequence[int] | None = None) -> None:
        if not isinstance(model, ZooModel):
            raise TypeError(f"FeatureExtractor needs a zoo network (a ZooModel), got {type(model).__name__}")
        super().__init__(
            model_name=model.model_name, in_chans=model.in_chans, min_size=model.min_size, native_size=model.native_size
        )
        self.check_inputs = model.check_inputs
        if getattr(model, "info", None) is not None:
            self.info = model.info
        stages = model.feature_stages()
        indices = resolve_out_indices(model.model_name, out_indices, len(stages))
        self.feature_info = FeatureInfo([stages[i] for i in indices], indices)
        path = model.main_path()
        self._path = tuple(path[: path.index(stages[indices[-1]].module) + 1])
        self._taps = frozenset(self.feature_info.module_name())
        self._adopt(model)
        self.dropped_modules = self._dropped(model)

    def _adopt(self, model: ZooModel) -> None:
        """Register the network's modules of the kept path under their own names (``features.block1_conv1``)."""
        for path in self._path:
            parent, _, child = path.rpartition(".")
            if parent and parent not in self._modules:
                self.add_module(parent, nn.Sequential())  # a container for the kept children only; never called
            holder = self.get_submodule(parent) if parent else self
            holder.add_module(child, model.get_submodule(path))

    def _dropped(self, model: ZooModel) -> tuple[str, ...]:
        """The network's modules left out (later stages, the head, the auxiliary heads), for weight loading."""
        kept = set(self._path)
        dropped = []
        for name, child in model.named_children():
            if name in kept:
                continue
            if name in self._modules:  # a container cut short: its children after the cut
                dropped += [f"{name}.{n}" for n, _ in child.named_children() if f"{name}.{n}" not in kept]
            else:
                dropped.append(name)
        return tuple(dict.fromkeys([*dropped, *model.dropped_modules]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        maps = []
        for path in self._path:
            x = self.get_submodule(path)(x)
            if path in self._taps:
                maps.append(x)
        return maps
