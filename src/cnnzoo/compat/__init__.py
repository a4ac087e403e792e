"""Old import paths: ``cnnzoo.compat.torchvision`` and ``cnnzoo.compat.keras`` now live in :mod:`cnnzoo.weights`."""
