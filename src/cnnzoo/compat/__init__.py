"""Weight compatibility with other libraries (torchvision, Keras)."""
