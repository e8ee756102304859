"""``seqapp export`` of a sine (series) run: raw histories in, forecasts in original units out.

The graph does what :func:`seqapp.tasks.regression.forecast` does, for a batch of series:
the step-to-step changes when the run models differences, normalisation by the training
mean and standard deviation (baked in as constants), the last ``window`` values read once
from a zero state, then each forecast chunk of ``horizon`` values fed back one step at a
time while the recurrent state is carried, in a ``tf.while_loop`` (a bidirectional model
re-reads its latest window instead), and the way back to original units (a cumulative sum
from the last value, for differences). The LiteRT graph is the single-step model alone,
on normalised values.
"""

from __future__ import annotations

from typing import Any

from seqapp.serving import LiteRTGraph, Serving, Tensor, after_checks, convert_litert, portable
from seqapp.tasks.regression_model import series_model


class SeriesServing(Serving):
    """A sine / series run's export."""

    @property
    def needed(self) -> int:
        """Values a history needs: one window, plus one when the run models differences."""
        prep = self.run.preprocessing
        return prep["window"] + bool(prep.get("difference"))

    def inputs(self) -> list[Tensor]:
        return [Tensor("history", "float64[N, T]", f"the past values of N series, in original units, oldest "
                                                    f"first; T >= {self.needed}"),
                Tensor("horizon", "int32[]", "how many steps to forecast (>= 1)")]

    def outputs(self) -> list[Tensor]:
        return [Tensor("forecast", "float64[N, horizon]", "the next values of each series, in original units")]

    def request(self) -> dict:
        history = [round(float(v), 4) for v in self.example_history()]
        return {"signature_name": "serving_default", "inputs": {"history": [history], "horizon": 5}}

    def example_history(self) -> Any:
        """A plausible history for the README's request: a wave at the training mean and scale."""
        import numpy as np

        prep = self.run.preprocessing
        steps = np.arange(self.needed)
        return prep["mean"] + prep["std"] * np.sin(2 * np.pi * steps / max(prep["window"], 4))

    def assets(self) -> dict[str, Any]:
        prep = self.run.preprocessing
        keys = ("mean", "std", "window", "horizon", "target", "difference", "name")
        return {"normalisation.json": {key: prep.get(key) for key in keys}}

    def notes(self) -> list[str]:
        prep = self.run.preprocessing
        how = ("each step's change from the one before, " if prep.get("difference") else "") + (
            f"(value - {prep['mean']:.6g}) / {prep['std']:.6g}")
        return [f"The graph reads the last {prep['window']} values of each history as {how}, forecasts "
                f"{prep['horizon']} step(s) at a time and feeds each forecast back, as `seqapp predict "
                "--horizon N` does; the values equal its forecast (within float32 rounding)."]

    def module(self) -> Any:
        import tensorflow as tf

        prep = self.run.preprocessing
        module = tf.Module()
        bidirectional = self.run.config.model.bidirectional
        module.model = self.model if bidirectional else self.step_model()

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float64, name="history"),
                                      tf.TensorSpec([], tf.int32, name="horizon")])
        def serve(history: Any, horizon: Any) -> dict:
            """Raw histories ``[N, T]`` -> forecasts ``[N, horizon]`` in original units (``serving_default``)."""
            history = after_checks([
                tf.debugging.assert_greater_equal(tf.shape(history)[1], self.needed,
                                                  message=f"history needs at least {self.needed} values per series"),
                tf.debugging.assert_positive(horizon, message="horizon must be at least 1")], history)
            recent = normalised(history, prep)[:, -prep["window"]:]
            chunks = (window_chunks if bidirectional else step_chunks)(module.model, recent, horizon, prep)
            return {"forecast": original_units(chunks[:, :horizon], history, prep)}

        module.serve = serve
        return module

    def step_model(self) -> Any:
        """The single-step model, sharing the run's trained weights."""
        model = series_model(self.run.config.model, self.run.preprocessing["horizon"], step=True)
        model.set_weights(self.run.model.get_weights())
        return portable(model)

    def litert(self) -> LiteRTGraph:
        import tensorflow as tf

        prep = self.run.preprocessing
        units = self.run.config.model.units
        if self.run.config.model.bidirectional:
            model, specs = self.model, [tf.TensorSpec([1, prep["window"], 1], tf.float32, name="values")]
            states: list[Tensor] = []
        else:
            model = self.step_model()
            specs = [tf.TensorSpec([1, None, 1], tf.float32, name="values")]
            specs += [tf.TensorSpec([1, int(state.shape[-1])], tf.float32, name=f"state_{i}")
                      for i, state in enumerate(model.inputs[1:])]
            states = [Tensor(spec.name, f"float32[1, {units}]", "a recurrent state: zeros for the first call, "
                             "then the matching output of the previous call") for spec in specs[1:]]
        blob, names = convert_litert(lambda inputs, training=False: model(inputs, training=False), specs)
        window = "the last window" if states else f"the last {prep['window']} values"
        return LiteRTGraph(
            blob,
            inputs=[Tensor("values", "float32[1, T, 1]", f"{window} of normalised values of one series (see "
                                                         "below)"), *states],
            outputs=[Tensor(names[0], f"float32[1, {prep['horizon']}]", "the next normalised values"),
                     *[Tensor(name, state.type, f"the new {state.name}") for name, state in zip(names[1:], states)]],
            usage=self.notes() + ["Normalise with `normalisation.json` (`(value - mean) / std`, of the "
                                  "step-to-step changes when `difference` is true), feed the last `window` values "
                                  "with zero states, then feed each forecast back (as values [1, horizon, 1]) "
                                  "with the returned states; undo with `value * std + mean` (and a cumulative "
                                  "sum from the last value, for differences)."])


def normalised(history: Any, prep: dict) -> Any:
    """What the model reads (``series_data.model_values``): float32 normalised values or changes."""
    import tensorflow as tf

    values = history[:, 1:] - history[:, :-1] if prep.get("difference") else history
    return tf.cast((values - prep["mean"]) / prep["std"], tf.float32)


def step_chunks(step_model: Any, recent: Any, horizon: Any, prep: dict) -> Any:
    """``[N, k * horizon]`` normalised forecasts: the window read once, each chunk fed back."""
    import tensorflow as tf

    states = [tf.zeros([tf.shape(recent)[0], int(state.shape[-1])]) for state in step_model.inputs[1:]]
    chunk, *states = step_model([recent[:, :, None], *states], training=False)
    count = (horizon + prep["horizon"] - 1) // prep["horizon"]
    chunks = tf.TensorArray(tf.float32, size=count).write(0, chunk)

    def feed(i: Any, chunk: Any, states: list, chunks: Any) -> tuple:
        """One loop step: the last chunk in, the next chunk and states out."""
        chunk, *states = step_model([chunk[:, :, None], *states], training=False)
        return i + 1, chunk, states, chunks.write(i, chunk)

    _, _, _, chunks = tf.while_loop(lambda i, *_: i < count, feed, (tf.constant(1), chunk, states, chunks))
    return flatten_chunks(chunks.stack())


def window_chunks(model: Any, recent: Any, horizon: Any, prep: dict) -> Any:
    """For a bidirectional model: each chunk forecast from the latest window, which then moves on."""
    import tensorflow as tf

    count = (horizon + prep["horizon"] - 1) // prep["horizon"]
    window = prep["window"]

    def feed(i: Any, recent: Any, chunks: Any) -> tuple:
        """One loop step: forecast from the latest window, then slide it over the forecast."""
        chunk = model(recent[:, -window:, None], training=False)
        return i + 1, tf.concat([recent, chunk], axis=1)[:, -window:], chunks.write(i, chunk)

    _, _, chunks = tf.while_loop(lambda i, *_: i < count, feed,
                                 (tf.constant(0), recent, tf.TensorArray(tf.float32, size=count)))
    return flatten_chunks(chunks.stack())


def flatten_chunks(stacked: Any) -> Any:
    """``[k, N, horizon]`` chunks as ``[N, k * horizon]``, in time order."""
    import tensorflow as tf

    batch = tf.shape(stacked)[1]
    return tf.reshape(tf.transpose(stacked, [1, 0, 2]), [batch, -1])


def original_units(predicted: Any, history: Any, prep: dict) -> Any:
    """``series_data.from_model``: float64 values, cumulated from the last value for differences."""
    import tensorflow as tf

    values = tf.cast(predicted, tf.float64) * prep["std"] + prep["mean"]
    if prep.get("difference"):
        return history[:, -1:] + tf.cumsum(values, axis=1)
    return values
