"""ECG encoders: ``(b, leads, t)`` mV -> ``(b, n_tokens, out_dim)`` tokens, chosen by name.

Importing this package registers every encoder in ``ecgqa.registry.ENCODERS``:

- ``resnet1d``: 1-D ResNet, the temporal feature map as tokens (40 for 10 s at 500 Hz).
- ``transformer``: patch embedding + transformer encoder (100 tokens of 50 samples).

``load_encoder()`` gives the shipped pretrained default (``DEFAULT_ENCODER_DIR``).
"""

from ecgqa.models.encoders import resnet1d, transformer  # noqa: F401  (register)
from ecgqa.models.encoders.base import EncoderError, InputSpec, prepare
from ecgqa.models.encoders.checkpoint import (
    DEFAULT_ENCODER_DIR,
    build_encoder,
    load_encoder,
    save_encoder,
)

__all__ = [
    "DEFAULT_ENCODER_DIR",
    "EncoderError",
    "InputSpec",
    "build_encoder",
    "load_encoder",
    "prepare",
    "save_encoder",
]
