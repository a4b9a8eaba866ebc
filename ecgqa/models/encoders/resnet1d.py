"""1-D ResNet over the leads: the temporal feature map becomes the ECG tokens.

``stem`` (strided conv + max-pool) -> 4 stages of basic residual blocks -> 1x1 conv to
``out_dim``. With the defaults a 10 s, 500 Hz input (5000 samples) is downsampled 128x
to 40 tokens, each covering about 0.26 s (a token per ~quarter of a beat).
"""

from __future__ import annotations

import torch
from torch import nn

from ecgqa.models.encoders.base import (
    EncoderError,
    InputSpec,
    check_size,
    conv_out_len,
    preprocess,
)
from ecgqa.registry import ENCODERS


class BasicBlock1d(nn.Module):
    """Two ``kernel``-wide convolutions with batch norm and an identity (or 1x1) shortcut."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.short = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride, bias=False),
                                       nn.BatchNorm1d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))          # (b, c_out, t / stride)
        h = self.bn2(self.conv2(h))
        return torch.relu(h + self.short(x))


class ResNet1d(nn.Module):
    """1-D ResNet ECG encoder: ``(b, leads, t) -> (b, n_tokens, out_dim)``.

    Args:
        input_spec: leads, rate, duration, normalisation (default 12 leads, 500 Hz, 10 s).
        widths: channels of the four stages.
        blocks: residual blocks per stage.
        strides: stride of each stage's first block.
        kernel: kernel size inside the residual blocks (odd).
        stem_kernel: kernel of the stem convolution (stride ``stem_stride``).
        stem_stride: stride of the stem convolution.
        pool: kernel and stride of the max-pool after the stem (1 = none).
        out_dim: token size; a 1x1 convolution maps ``widths[-1]`` to it.

    Example:
        >>> enc = ResNet1d(widths=(16, 32, 64, 64), out_dim=64)
        >>> enc(torch.randn(2, 12, 5000)).shape      # (b, n_tokens, out_dim)
        torch.Size([2, 40, 64])
    """

    def __init__(self, input_spec: InputSpec | dict | None = None,
                 widths: tuple[int, ...] | list[int] = (32, 64, 128, 256),
                 blocks: tuple[int, ...] | list[int] = (2, 2, 2, 2),
                 strides: tuple[int, ...] | list[int] = (2, 2, 2, 4),
                 kernel: int = 7, stem_kernel: int = 15, stem_stride: int = 2, pool: int = 2,
                 out_dim: int = 256):
        super().__init__()
        widths, blocks, strides = list(widths), list(blocks), list(strides)
        _check_args(widths, blocks, strides, kernel, stem_kernel, out_dim)
        self.input_spec = InputSpec.from_dict(input_spec)
        self.config = dict(widths=widths, blocks=blocks, strides=strides, kernel=kernel,
                           stem_kernel=stem_kernel, stem_stride=stem_stride, pool=pool,
                           out_dim=out_dim)
        self.stem = nn.Sequential(
            nn.Conv1d(self.input_spec.n_leads, widths[0], stem_kernel, stem_stride,
                      stem_kernel // 2, bias=False),
            nn.BatchNorm1d(widths[0]), nn.ReLU(),
            nn.MaxPool1d(pool, pool) if pool > 1 else nn.Identity())
        stages, c_in = [], widths[0]
        for width, n_blocks, stride in zip(widths, blocks, strides):
            layers = [BasicBlock1d(c_in if i == 0 else width, width, kernel,
                                   stride if i == 0 else 1) for i in range(n_blocks)]
            stages.append(nn.Sequential(*layers))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv1d(widths[-1], out_dim, 1) if out_dim != widths[-1] else nn.Identity()
        self.out_dim = int(out_dim)
        self.n_tokens = self._count_tokens(self.input_spec.n_samples)

    def _count_tokens(self, n: int) -> int:
        c = self.config
        n = conv_out_len(n, c["stem_kernel"], c["stem_stride"], c["stem_kernel"] // 2)
        if c["pool"] > 1:
            n = conv_out_len(n, c["pool"], c["pool"], 0)
        for stride in c["strides"]:
            n = conv_out_len(n, c["kernel"], stride, c["kernel"] // 2)
        if n < 1:
            raise EncoderError(f"resnet1d: input of {self.input_spec.n_samples} samples is too "
                               "short for this downsampling; use fewer strides")
        return n

    def forward(self, x: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(b, leads, t)`` mV, ``lead_mask`` ``(b, leads)`` -> ``(b, n, out_dim)``."""
        x = preprocess(x, lead_mask, self.input_spec)     # (b, leads, t)
        h = self.stages(self.stem(x))                     # (b, widths[-1], n)
        h = self.head(h)                                  # (b, out_dim, n)
        return h.transpose(1, 2)                          # (b, n, out_dim)


def _check_args(widths, blocks, strides, kernel, stem_kernel, out_dim) -> None:
    values = [*widths, *blocks, *strides, kernel, stem_kernel, out_dim]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise EncoderError("resnet1d: bad arguments: widths, blocks, strides, kernels and "
                           "out_dim must be whole numbers")
    if not (len(widths) == len(blocks) == len(strides)) or not widths:
        raise EncoderError(f"resnet1d: widths, blocks and strides need one entry per stage, "
                           f"got {len(widths)}, {len(blocks)}, {len(strides)}")
    if min(widths + blocks + strides + [out_dim]) < 1:
        raise EncoderError("resnet1d: widths, blocks, strides and out_dim must be >= 1")
    if kernel % 2 == 0 or stem_kernel % 2 == 0:
        raise EncoderError(f"resnet1d: kernel sizes must be odd, got kernel={kernel}, "
                           f"stem_kernel={stem_kernel}")
    size, prev = 12 * widths[0] * stem_kernel, widths[0]
    for w, b in zip(widths, blocks):
        size += b * 2 * w * w * kernel + prev * w
        prev = w
    check_size("resnet1d", size + prev * out_dim)


@ENCODERS.register("resnet1d")
def build_resnet1d(**kwargs) -> ResNet1d:
    """Registry builder: ``ENCODERS.build("resnet1d", out_dim=256, ...)``."""
    return ResNet1d(**kwargs)
