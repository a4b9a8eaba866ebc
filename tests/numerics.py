"""Float tolerances derived from float32 arithmetic, for tests that compare two code paths.

Two float32 computations of one quantity that differ only in how their sums are ordered or
blocked (another CPU kernel, a KV cache, a batch of another size) each carry rounding
errors of a few units in the last place (ulp) of the quantities they add, accumulated along
the computation. So their difference is bounded by ``k * u * scale``: ``u = 2**-24`` is
float32's unit roundoff, ``scale`` the magnitude of the quantity (the largest absolute
value compared), and ``k`` the number of roundings that can add up, which each call site
states with its reason. A real bug (a shifted position, a missing term, a wrong scale)
moves results by far more than that.
"""

from __future__ import annotations

import torch

U32 = 2.0 ** -24


def assert_fp32_close(actual: torch.Tensor, expected: torch.Tensor, k: float,
                      scale: float | None = None) -> None:
    """``|actual - expected| <= k * u * scale`` elementwise (scale: ``max |expected|``)."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    scale = float(expected.abs().max()) if scale is None else scale
    bound = k * U32 * max(scale, 1e-30)
    worst = float((actual - expected).abs().max())
    assert worst <= bound, (f"max |diff| {worst:.3g} > {k:g} u x {scale:.3g} = {bound:.3g}")
