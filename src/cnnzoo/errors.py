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


class DownloadError(CnnzooError, OSError):
    """A file could not be fetched: network failure, HTTP error, or offline mode without a cached copy."""


class DigestMismatchError(DownloadError):
    """The downloaded bytes do not have the pinned digest; nothing was kept."""


class OfflineError(DownloadError):
    """``CNNZOO_OFFLINE`` is set and the file is not cached."""


class UnknownPretrainedError(UnknownModelError):
    """A zoo model without published weights, or a tag the model does not have."""


class OptionError(CnnzooError, ValueError):
    """An option (a command-line flag or a function's argument) holding a value it does not allow.

    ``option`` names it as the user gave it (``--topk``, ``topk``), ``allowed`` says what it takes; raised
    before anything is built or written."""

    def __init__(self, option: str, value: object, allowed: str) -> None:
        self.option, self.value, self.allowed = option, value, allowed
        super().__init__(f"{option}: {value!r} is not allowed (must be {allowed})")


class OutputError(CnnzooError, ValueError):
    """An output path cnnzoo will not write: a folder, a device, a file of another kind, an existing output
    without ``force``, a place that is not writable. Raised before any work; nothing was written."""
