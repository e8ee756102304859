"""How much arithmetic a recurrent cell does per token, and what share of the sgemm bound a speed is.

One recurrent step multiplies the concatenated ``[input, previous state]`` (``inputs + units``
values) by one ``(inputs + units) x units`` weight matrix per gate: LSTM has 4 gates, GRU 3,
SimpleRNN 1. A multiply-add counts as 2 FLOPs, and the backward pass costs about twice the
forward pass (gradients with respect to the inputs and to the weights), so per token

    FLOPs = 3 x 2 x gates x (inputs + units) x units        (forward + backward)

e.g. LSTM(256) on a 64-wide embedding: 3 x 2 x 4 x 320 x 256 = 1,966,080 FLOPs. Biases,
the element-wise gate arithmetic, the embedding and the output layer are left out, so the
share of the bound is a slight underestimate of the work done.
"""

from __future__ import annotations

GATES = {"lstm": 4, "gru": 3, "simplernn": 1}


def cell_flops_per_token(cell: str, inputs: int, units: int) -> int:
    """Forward + backward FLOPs of one ``cell`` step per token (the formula in the module docstring)."""
    return 3 * 2 * GATES[cell] * (inputs + units) * units


def percent_of_bound(tokens_per_s: float | None, flops_per_token: int, gflops: float | None) -> float | None:
    """``tokens_per_s`` as a percentage of what ``gflops`` of matrix products would allow (None if unknown)."""
    if not tokens_per_s or not gflops:
        return None
    return round(100.0 * tokens_per_s * flops_per_token / (gflops * 1e9), 1)
