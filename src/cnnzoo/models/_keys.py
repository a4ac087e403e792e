"""Key maps the model files declare in their registry entries (metadata, so below every weight format)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence


def renamer_from_sequences(sections: Mapping[str, Sequence[str]]) -> Callable[[str], str]:
    """A key renamer for torchvision models built from indexed ``nn.Sequential`` blocks.

    torchvision's AlexNet and VGG name layers by position (``features.3.weight``); cnnzoo names the
    same layers as the paper and Keras do (``features.block2_conv1.weight``). ``sections`` maps each
    Sequential's name to our child names in order.
    """

    def rename(key: str) -> str:
        parts = key.split(".", 2)
        names = sections.get(parts[0]) if len(parts) == 3 else None
        if names is None or not parts[1].isdigit() or int(parts[1]) >= len(names):
            return key  # leave it: the checked load reports it as unexpected
        return f"{parts[0]}.{names[int(parts[1])]}.{parts[2]}"

    return rename
