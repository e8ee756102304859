"""The sine / series network: windows of values in, the next values out, and its single-step twin.

Used by the task (training, forecasting) and by its export (:mod:`seqapp.tasks.regression_serving`).
"""

from __future__ import annotations

from typing import Any

from seqapp.layers import apply_stack, output_head, recurrent_stack, stateful_step


def series_model(model_cfg: Any, horizon: int, sequence: bool = False, step: bool = False) -> Any:
    """Windows of values -> recurrent stack -> Dense(horizon).

    ``sequence=True`` predicts at every position (``return_sequences``). With
    ``step=True`` the same layers also take and return the recurrent states and output
    the last position's forecast: the single-step model for stateful forecasting. Both
    variants create their layers in the same order, so they share weights with
    ``set_weights``.
    """
    import keras

    values = keras.Input((None, 1), name="values")
    stack = recurrent_stack(model_cfg.cell, model_cfg.units, model_cfg.layers, model_cfg.dropout,
                            model_cfg.bidirectional, return_sequences=sequence and not step,
                            return_state=step, name="series")
    head = output_head(horizon, name="forecast")
    if not step:
        x, _ = apply_stack(stack, values)
        return keras.Model(values, head(x), name="series_model")
    x, state_inputs, states = stateful_step(stack, values, model_cfg.cell, model_cfg.units, model_cfg.layers)
    return keras.Model([values, *state_inputs], [head(x), *states], name="series_model_step")
