"""Errors cnnzoo raises. Each message names what was expected, what was given, and what to change."""


class CnnzooError(Exception):
    """Base class of every error cnnzoo raises on purpose."""


class ShapeError(CnnzooError, ValueError):
    """A layer's output size does not come out whole, or is empty."""


class InputShapeError(CnnzooError, ValueError):
    """A tensor given to a model does not have the shape the model needs."""


class UnknownModelError(CnnzooError, KeyError):
    """A model name that is not in the zoo."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(CnnzooError, ValueError):
    """A state dict or weight file that does not fit the model."""
