"""Faster training of the stock Keras LSTM, GRU and SimpleRNN layers on CPU (TensorFlow).

Keras runs a recurrent layer on the CPU as a loop of per-step cell calls, and autodiff of
that loop computes the weight gradients as one small matrix product per step. Here, as in
cuDNN and oneDNN, the input projection of all steps is one matrix product (``x @ kernel +
bias``) before the loop, the loop holds only ``h @ recurrent_kernel`` and the gate
arithmetic, and a hand-written backward pass (``tf.custom_gradient``) runs the loop in
reverse for the per-step gate gradients and then forms the weight gradients as single
large products over all steps (``d recurrent_kernel = H_prev^T dG``; ``d kernel`` and
``d bias`` follow from the projection's own gradient). After an Embedding with few rows
(a character model's), the projection is made of the embedding table instead and its rows
looked up (:func:`project_steps`).

A mask (``Embedding(mask_zero=True)``, a ``Masking`` layer, ``mask=`` by hand) is followed as
Keras's own loop follows it: at a masked step every state is carried through unchanged and
the output is the previous step's output (zeros before the first kept step), or zeros where
the layer has ``zero_output_for_mask`` (``Bidirectional`` sets it when returning sequences);
``go_backwards`` reverses the mask with the steps. Any mask is exact, not only padding. The
steps where every row is masked change nothing, so the loops run only from the first step
any row keeps to the last (:class:`Span`): in a right-padded batch they skip the padding
after its longest row, or before it in a reversed direction.

:func:`accelerate` swaps each eligible layer's ``inner_loop`` (an attribute of that layer
instance) for the fast one. The weights are the layer's own variables in Keras's gate
order, so nothing about the saved model changes: ``model.keras`` holds stock layers and
loads without seqapp. The fast loop is exact or absent: it gives the stock layer's outputs
and gradients (to float rounding; ``tests/test_fastrnn.py`` checks every cell at T=200 and
256 units, eager, XLA and Bidirectional, and with masks at T=48 and 96 units), and whatever
it does not cover keeps Keras's own code. :func:`unsupported` leaves a layer untouched for
good (subclasses, ``unroll``, dropout, no bias, activations other than Keras's tanh and
sigmoid, ``reset_after=False``, mixed precision; on a GPU nothing is touched, Keras uses
cuDNN there). At call time the fast loop runs only in training (``training=True``) and, with
a mask, only with one of shape (batch, time). When no recurrent layer of a model takes it,
one note goes to the ``seqapp`` logger.

:func:`keep_freed_memory`, a process-wide allocator setting that makes compiled training
steps faster, is a start-up step of its own: nothing here calls it. ``train.fast_rnn`` and
``train.keep_freed_memory`` turn them on for a run (:mod:`seqapp.training`).
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import tensorflow as tf

_STOCK = "_seqapp_stock_inner_loop"  # the attribute that keeps the layer's own inner_loop
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_heap_kept: bool | None = None
log = logging.getLogger("seqapp")


# -- choosing the layers ---------------------------------------------------------------


def accelerate(model: Any) -> list:
    """Give every eligible recurrent layer of ``model`` the fast training loop; return the
    layers that have it (those given it by an earlier call too: calling it again changes nothing).

    Layers inside ``Bidirectional`` wrappers and nested models count. On a machine with a GPU
    nothing is changed (Keras uses cuDNN there) and nothing is noted. When the model has
    recurrent layers and none can take the fast loop, one note to the ``seqapp`` logger says
    why. The allocator (:func:`keep_freed_memory`) is not touched.
    """
    if tf.config.list_logical_devices("GPU"):
        return []
    layers = recurrent_layers(model)
    refusals = [(layer, unsupported(layer)) for layer in layers]
    fresh = [layer for layer, why in refusals if why is None and not hasattr(layer, _STOCK)]
    usage = _Usage(fresh)
    for layer in fresh:
        stock = layer.inner_loop
        object.__setattr__(layer, _STOCK, stock)  # plain attributes: Keras tracks nothing here
        object.__setattr__(layer, "inner_loop", _fast_inner_loop(layer, stock, usage))
    fast = [layer for layer in layers if hasattr(layer, _STOCK)]
    if layers and not fast:
        _note([(layer.name, why) for layer, why in refusals])
    return fast


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of handing large blocks back to the OS;
    return whether it does. A start-up step of its own (``train.keep_freed_memory``).

    Why: a compiled training step allocates its large temporaries (gate buffers of tens of
    MB) afresh every step; glibc serves blocks that size with mmap and unmaps them on free,
    so each step page-faults all of them in again. With mmap off and a 1 GiB trim threshold
    they stay in the heap. Measured on the textgen LSTM-256 (batch 64 x 100, XLA, 2-core
    EPYC): page faults per step 22,900 -> ~10 with the fast loop (48,500 -> ~7 with Keras's),
    CPU time per step about 0.75x, peak memory +170 MB (of 1.05 GB). The price: it holds for
    the whole process and for good (:func:`restore` does not undo it, nothing does), and the
    process keeps its peak heap instead of returning it to the OS. Once per process; a no-op
    (False) where the C library is not glibc.
    """
    global _heap_kept
    if _heap_kept is None:
        _heap_kept = False
        try:
            libc = ctypes.CDLL(None)
            if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt"):
                _heap_kept = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
        except OSError:
            pass
    return _heap_kept


def restore(model: Any) -> None:
    """Undo :func:`accelerate`: every layer runs Keras's own loop again."""
    for layer in recurrent_layers(model):
        if hasattr(layer, _STOCK):
            object.__delattr__(layer, "inner_loop")
            object.__delattr__(layer, _STOCK)


def recurrent_layers(model: Any) -> list:
    """The LSTM, GRU and SimpleRNN layers of ``model``, also inside Bidirectional wrappers."""
    import keras

    kinds = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)
    found: dict[int, Any] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        wrapped = isinstance(layer, keras.layers.Bidirectional)
        inner = (layer.forward_layer, layer.backward_layer) if wrapped else (layer,)
        found.update((id(item), item) for item in inner if isinstance(item, kinds))
    return list(found.values())


def unsupported(layer: Any) -> str | None:
    """Why ``layer`` must keep Keras's own loop for good, or None when it can take the fast one.

    Dropout and dtypes are fixed when a layer is made, so they are refused here rather than
    at call time: a refused layer is never counted as accelerated.
    """
    import keras

    cell = layer.cell
    tanh, sigmoid = _exact_activations()
    checks = (
        (type(layer) not in (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN),
         "a subclass (it may change the cell's maths)"),
        (layer.unroll, "unroll=True"),
        (getattr(cell, "dropout", 0) > 0 or getattr(cell, "recurrent_dropout", 0) > 0, "dropout"),
        (not cell.use_bias, "use_bias=False"),
        (not _one_of(cell.activation, tanh), "activation is not Keras's tanh"),
        (not _one_of(getattr(cell, "recurrent_activation", tf.sigmoid), sigmoid),
         "recurrent_activation is not Keras's sigmoid"),
        (not getattr(cell, "reset_after", True), "reset_after=False"),
        (cell.compute_dtype != "float32" or cell.variable_dtype != "float32", "not float32 (mixed precision)"),
    )
    return next((why for refused, why in checks if refused), None)


def _exact_activations() -> tuple[tuple, tuple]:
    """The functions that are exactly tanh and sigmoid, the ones Keras's own cuDNN check
    accepts (keras.src.backend.tensorflow.rnn). Compared by identity: a custom function that
    is merely *named* ``tanh`` computes something else."""
    import keras

    return ((keras.activations.tanh, keras.ops.tanh, tf.tanh),
            (keras.activations.sigmoid, keras.ops.sigmoid, tf.sigmoid))


def _one_of(function: Any, allowed: tuple) -> bool:
    return any(function is candidate for candidate in allowed)


def _note(refusals: list[tuple[str, str | None]]) -> None:
    """One line to the ``seqapp`` logger: no recurrent layer of a model takes the fast loop, and why."""
    why = "; ".join(f"{name}: {reason}" for name, reason in refusals)
    log.info("fast_rnn: no recurrent layer takes seqapp's fast loop, Keras's own loop trains them (%s)", why)


class _Usage:
    """Which layers of one :func:`accelerate` call took the fast loop in training calls.

    A mask the fast loop does not follow (one not of shape (batch, time)) sends a training
    call to the stock loop. When every layer has fallen back so and none ran fast, one note
    says so. A few Python operations per call, at trace time in a compiled step.
    """

    def __init__(self, layers: list) -> None:
        self.names = {id(layer): layer.name for layer in layers}
        self.fast: set[int] = set()
        self.stock: dict[int, str] = {}
        self.noted = False

    def record(self, layer: Any, why: str | None) -> None:
        """``why``: the reason the call took the stock loop, None when it ran fast."""
        if why is None:
            self.fast.add(id(layer))
        else:
            self.stock[id(layer)] = why
        if not self.noted and not self.fast and len(self.stock) == len(self.names):
            self.noted = True
            _note([(name, self.stock[key]) for key, name in self.names.items()])


def _fast_inner_loop(layer: Any, stock: Any, usage: _Usage) -> Any:
    """The replacement for ``layer.inner_loop``: the fast loop for a training call (with no mask
    or one of shape (batch, time)), else ``stock``; ``usage`` hears which a training call took."""

    def inner_loop(sequences: Any, initial_state: Any, mask: Any, training: Any = False) -> Any:
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if training is not True:
            return stock(sequences, initial_state, mask=mask, training=training)
        shape = None if mask is None else tf.TensorShape(mask.shape)
        why = None if shape is None or shape.rank == 2 else f"a mask of shape {shape}"
        usage.record(layer, why)
        if why is not None:
            return stock(sequences, initial_state, mask=mask, training=training)
        return run_layer(layer, sequences, initial_state, mask)

    return inner_loop


def run_layer(layer: Any, sequences: Any, initial_state: Any, mask: Any = None) -> tuple[Any, Any, list]:
    """``inner_loop``'s answer for ``layer``: last output, outputs (batch-major, loop order), states.

    ``mask`` (batch, time): the steps each row keeps. The loops return the states of every
    step (carried through the masked ones); the outputs follow from them and the mask here.
    """
    import keras

    cell = layer.cell
    states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
    states = [s[0] if isinstance(s, (list, tuple)) else s for s in states]  # GRU may nest its one state
    # A stateful layer's states are its variables, which Keras assigns the new states after
    # this call and before the backward pass runs: read them now, so the gradient sees the
    # states this call started from (the custom gradient would otherwise read them again).
    states = [tf.convert_to_tensor(s) for s in states]
    kernel, recurrent = tf.convert_to_tensor(cell.kernel), tf.convert_to_tensor(cell.recurrent_kernel)
    bias = tf.convert_to_tensor(cell.bias)
    input_bias = bias[0] if isinstance(layer, keras.layers.GRU) else bias
    xg, ids = project_steps(sequences, kernel, input_bias, layer.go_backwards)
    keep = None if mask is None else kept_steps(mask, layer.go_backwards)
    if isinstance(layer, keras.layers.LSTM):
        hs, c_last = lstm_sequence(xg, states[0], states[1], recurrent, ids, keep)
        new_states = [hs[-1], c_last]
    elif isinstance(layer, keras.layers.GRU):
        hs = gru_sequence(xg, states[0], recurrent, bias[1], ids, keep)
        new_states = [hs[-1]]
    else:
        hs = simple_sequence(xg, states[0], recurrent, ids, keep)
        new_states = [hs[-1]]
    if layer.return_sequences:
        outputs = masked_outputs(hs, keep, layer.zero_output_for_mask)
        return outputs[-1], tf.transpose(outputs, [1, 0, 2]), new_states
    last = hs[-1] if keep is None else tf.where(_last_shown(keep, layer.zero_output_for_mask), hs[-1], 0.0)
    return last, last[:, None, :], new_states


def kept_steps(mask: Any, backwards: bool) -> Any:
    """The (batch, time) ``mask`` as (time, batch, 1) booleans in loop order (true: the step counts)."""
    keep = tf.transpose(tf.cast(mask, tf.bool))[:, :, None]
    return tf.reverse(keep, [0]) if backwards else keep


def masked_outputs(hs: Any, keep: Any, zero_output: bool) -> Any:
    """The outputs of steps with states ``hs`` (time, batch, units; carried through masked steps), as
    Keras's loop gives them: a masked step repeats the previous step's output, zeros before the first
    kept step (``hs`` there is the initial state); with ``zero_output`` it is zeros."""
    if keep is None:
        return hs
    shown = keep if zero_output else tf.cumsum(tf.cast(keep, hs.dtype), 0) > 0
    return tf.where(shown, hs, tf.zeros((), hs.dtype))


def _last_shown(keep: Any, zero_output: bool) -> Any:
    """Whether the last output is the last state (batch, 1), else zeros: :func:`masked_outputs` of the last step."""
    return keep[-1] if zero_output else tf.reduce_any(keep, 0)


def project_steps(sequences: Any, kernel: Any, bias: Any, backwards: bool) -> tuple[Any, Any]:
    """``(xg, None)``: ``sequences @ kernel + bias`` for all steps, time-major in loop order
    (time, batch, gates); or ``(projected table, ids)`` (ids: time, batch, in loop order).

    The second when the sequences are rows looked up in a small table (:func:`table_lookup`:
    an Embedding's output): the table is projected instead (for a character model, 65 rows
    instead of batch x steps) and each step of the loop looks up its rows of the projected
    table, so the (time, batch, gates) inputs are never written out; the gradient reaches
    the table through the same product.
    """
    lookup = table_lookup(sequences)
    if lookup is not None:
        table, ids = lookup
        ids = tf.transpose(ids)
        return tf.matmul(table, kernel) + bias, tf.reverse(ids, [0]) if backwards else ids
    x = tf.transpose(tf.convert_to_tensor(sequences), [1, 0, 2])
    return project(tf.reverse(x, [0]) if backwards else x, kernel, bias), None


def table_lookup(sequences: Any) -> tuple[Any, Any] | None:
    """``(table, ids)`` when ``sequences`` (in a traced graph) is ``tf.gather(table, ids)`` along
    the table's rows and the table has at most half as many rows as the lookup has ids (at
    most 1024 when the ids' shape is not known); None otherwise."""
    op = getattr(sequences, "op", None)  # an eager tensor has none
    if op is None or op.type != "GatherV2" or op.get_attr("batch_dims") != 0:
        return None
    table, ids, axis = op.inputs
    if tf.get_static_value(axis) != 0 or table.shape.rank != 2 or ids.shape.rank != 2:
        return None
    rows, count = table.shape[0], ids.shape.num_elements()
    return (table, ids) if rows is not None and rows <= (count // 2 if count else 1024) else None


def project(x: Any, kernel: Any, bias: Any) -> Any:
    """``x @ kernel + bias`` for all steps at once: (time, batch, in) -> (time, batch, gates)."""
    shape = tf.shape(x)
    flat = tf.matmul(tf.reshape(x, [-1, shape[2]]), kernel) + bias
    return tf.reshape(flat, [shape[0], shape[1], kernel.shape[1]])


# -- loops ---------------------------------------------------------------------------


def _steps(x: Any) -> Any:
    return tf.shape(x)[0]


def step_inputs(xg: Any, ids: Any) -> Any:
    """``t -> `` the projected inputs of step t (batch, gates): a slice of ``xg``, or with ``ids``
    the rows of the projected table ``xg`` that step t looks up (see :func:`project_steps`)."""
    if ids is None:
        return tf.TensorArray(xg.dtype, size=_steps(xg)).unstack(xg).read
    return lambda t: tf.gather(xg, ids[t])


def input_gradient(d_steps: Any, xg: Any, ids: Any) -> Any:
    """The gradient of ``xg`` from that of every step's inputs, ``d_steps`` (time, batch, gates):
    itself, or with ``ids`` summed into the rows of the projected table."""
    if ids is None:
        return d_steps
    flat = tf.reshape(d_steps, [-1, d_steps.shape[-1]])
    return tf.math.unsorted_segment_sum(flat, tf.reshape(ids, [-1]), tf.shape(xg)[0])


def _count(xg: Any, ids: Any) -> Any:
    """The number of steps."""
    return _steps(xg if ids is None else ids)


def _arrays(dtype: Any, size: Any, count: int) -> list:
    return [tf.TensorArray(dtype, size=size) for _ in range(count)]


def _flat_product(a: Any, b: Any) -> Any:
    """``sum over time and batch of a^T b``: (T, B, m), (T, B, n) -> (m, n), one matrix product."""
    return tf.matmul(tf.reshape(a, [-1, a.shape[-1]]), tf.reshape(b, [-1, b.shape[-1]]), transpose_a=True)


def _with_first(first: Any, rest: Any) -> Any:
    """``rest`` with ``first`` put before its first step and its last step dropped (the previous states)."""
    return tf.concat([first[None], rest[:-1]], 0)


def _zeros_if_none(grad: Any, like: Any) -> Any:
    return tf.zeros_like(like) if grad is None else grad


class Span:
    """The steps a loop runs, with the mask of each: all steps without a mask (``keep`` None);
    with one, from the first step any row keeps to the last (all steps when no row keeps any).

    ``keep``: (time, batch, 1) booleans in loop order. A step outside the span is masked in every
    row: it carries every state through unchanged, so the loops skip it and :meth:`fill` writes
    its states afterwards; in the backward pass the gradients of those steps' states add up
    unchanged (:meth:`outside`). Keras's loop runs those steps as masked ones, to the same values.
    """

    def __init__(self, steps: Any, keep: Any = None) -> None:
        self.keep, self.steps = keep, steps
        self.first, self.last = (tf.constant(0), steps - 1) if keep is None else self.bounds(keep, steps)

    @staticmethod
    def bounds(keep: Any, steps: Any) -> tuple[Any, Any]:
        """The first and the last step any row keeps; 0 and ``steps - 1`` when no row keeps any."""
        any_row = tf.cast(tf.reduce_any(keep, [1, 2]), tf.int32)
        return (tf.argmax(any_row, output_type=tf.int32),
                steps - 1 - tf.argmax(tf.reverse(any_row, [0]), output_type=tf.int32))

    def reader(self) -> Any:
        """``t -> `` the (batch, 1) mask of step t, or None without a mask (a fresh reader per loop:
        each step reads its mask once)."""
        if self.keep is None:
            return lambda t: None
        return tf.TensorArray(tf.bool, size=self.steps).unstack(self.keep).read

    def _where(self, index: Any) -> tuple[Any, Any]:
        return index < self.first, index > self.last

    def fill(self, stacked: Any, initial: Any) -> Any:
        """Every step's states (time, batch, units) from those the loop wrote (``stacked``, zeros
        outside the span): ``initial`` before the span, its last step's states after it."""
        if self.keep is None:
            return stacked
        early, late = self._where(tf.range(self.steps)[:, None, None])
        return tf.where(early, initial[None], tf.where(late, stacked[self.last][None], stacked))

    def outside(self, d_states: Any) -> tuple[Any, Any]:
        """The summed gradients of the states of the steps after the span (they reach its last
        step's state) and before it (they reach the initial state); zeros and None without a mask."""
        if self.keep is None:
            return tf.zeros_like(d_states[0]), None
        early, late = self._where(tf.range(self.steps)[:, None, None])
        return (tf.reduce_sum(tf.where(late, d_states, 0.0), 0), tf.reduce_sum(tf.where(early, d_states, 0.0), 0))

    def forward(self, body: Any, state: tuple) -> tuple:
        """``tf.while_loop`` of ``body(t, *state)`` over the span, first step first."""
        return tf.while_loop(lambda t, *_: t <= self.last, body, (self.first, *state))[1:]

    def backward(self, body: Any, state: tuple) -> tuple:
        """``tf.while_loop`` of ``body(t, *state)`` over the span, last step first."""
        return tf.while_loop(lambda t, *_: t >= self.first, body, (self.last, *state))[1:]


def _carry(kept: Any, new: Any, old: Any) -> Any:
    """``new`` in the rows that keep the step (all without a mask: ``kept`` None), ``old`` in the
    masked ones (Keras's tf.where): a state after the step, or in the backward pass the gradient
    of the state before it (a masked step passes it back unchanged)."""
    return new if kept is None else tf.where(kept, new, old)


def _kept_only(kept: Any, grad: Any) -> Any:
    """``grad`` with the rows that mask the step set to zero (a masked step's gates get no gradient)."""
    return grad if kept is None else tf.where(kept, grad, 0.0)


def _plus(value: Any, other: Any) -> Any:
    return value if other is None else value + other


# LSTM, Keras gate order i, f, c (the candidate, here g), o. All four activations are one
# sigmoid over the gate inputs: tanh(x) = 2 sigmoid(2x) - 1, so with m = 2 on the candidate's
# columns and 1 elsewhere, act = m sigmoid(m z) - (m - 1), and its derivative is
# (1 - act) (act + m - 1): one fused pass each way instead of one per gate.


def lstm_sequence(xg: Any, h0: Any, c0: Any, recurrent: Any, ids: Any = None, keep: Any = None) -> tuple[Any, Any]:
    """The LSTM over projected inputs ``xg`` (time, batch, 4H; or a table with ``ids``, see
    :func:`project_steps`), with ``keep`` the mask (time, batch, 1) or None: the h of every step
    (carried through masked steps) and the last c."""

    @tf.custom_gradient
    def run(xg: Any, h0: Any, c0: Any, recurrent: Any) -> Any:
        span = Span(_count(xg, ids), keep)
        acts, cs, hs, c_last = _lstm_forward(step_inputs(xg, ids), span, h0, c0, recurrent)
        cs = span.fill(cs, c0)
        tanh_cs = tf.tanh(cs)
        # unmasked: h of all steps at once, as in the loop
        hs = acts[:, :, 3 * recurrent.shape[0]:] * tanh_cs if hs is None else span.fill(hs, h0)

        def grad(d_hs: Any, d_c: Any) -> tuple:
            d_hs, d_c = _zeros_if_none(d_hs, hs), _zeros_if_none(d_c, c0)
            dz, dh0, dc0 = _lstm_backward(d_hs, d_c, acts, tanh_cs, _with_first(c0, cs), recurrent, span)
            return input_gradient(dz, xg, ids), dh0, dc0, _flat_product(_with_first(h0, hs), dz)

        return (hs, c_last), grad

    return run(xg, h0, c0, recurrent)


def _candidate_columns(units: int, dtype: Any) -> Any:
    """m - 1 of the comment above: 1 on the candidate's columns, 0 on the gates'."""
    return tf.concat([tf.zeros([2 * units], dtype), tf.ones([units], dtype), tf.zeros([units], dtype)], 0)


def _lstm_forward(inputs: Any, span: Span, h0: Any, c0: Any, recurrent: Any) -> tuple:
    """Forward loop over ``span`` (``inputs(t)``: step t's projected inputs): the activated gates
    [i, f, g, o] and c of every step, h of every step with a mask (else None), and the last c.

    Without a mask the outputs h are not written here: ``o tanh(c)`` is one pass over all steps
    afterwards. With two records per step the loop body is at most 8 thunks, which XLA's CPU
    runtime executes in order on one thread instead of handing each to its thread pool
    (measured: 3-5% of a step). With a mask h is written: a masked step repeats an earlier h.
    """
    n = recurrent.shape[0]
    k = _candidate_columns(n, h0.dtype)
    keep = span.reader()

    def body(t: Any, h: Any, c: Any, acts: Any, cs: Any, *hs: Any) -> tuple:
        z = inputs(t) + tf.matmul(h, recurrent)
        act = (1 + k) * tf.sigmoid((1 + k) * z) - k
        kept = keep(t)
        c = _carry(kept, act[:, n:2 * n] * c + act[:, :n] * act[:, 2 * n:3 * n], c)
        h = _carry(kept, act[:, 3 * n:] * tf.tanh(c), h)
        return t + 1, h, c, acts.write(t, act), cs.write(t, c), *(array.write(t, h) for array in hs)

    masked = span.keep is not None
    loop = span.forward(body, (h0, c0, *_arrays(h0.dtype, span.steps, 3 if masked else 2)))
    return loop[2].stack(), loop[3].stack(), loop[4].stack() if masked else None, loop[1]


def _lstm_backward(d_hs: Any, d_c: Any, acts: Any, tanh_cs: Any, c_prevs: Any, recurrent: Any, span: Span) -> tuple:
    """Reverse loop: the gradients of the gate inputs (time, batch, 4H) and of h0 and c0."""
    n = recurrent.shape[0]
    k = _candidate_columns(n, acts.dtype)
    steps = _steps(acts)
    dh_in, act_in, tanh_c, c_prev = (tf.TensorArray(acts.dtype, size=steps).unstack(a)
                                     for a in (d_hs, acts, tanh_cs, c_prevs))
    recurrent_t = tf.transpose(recurrent)  # once: the loop's product then reads U^T in order
    keep = span.reader()
    dh_after, dh_before = span.outside(d_hs)

    def body(t: Any, dh: Any, dc: Any, dzs: Any) -> tuple:
        act, tc, kept = act_in.read(t), tanh_c.read(t), keep(t)
        dh = dh + dh_in.read(t)
        dc_step = dc + dh * act[:, 3 * n:] * (1 - tc * tc)
        d_act = tf.concat([dc_step * act[:, 2 * n:3 * n], dc_step * c_prev.read(t), dc_step * act[:, :n], dh * tc], 1)
        dz = _kept_only(kept, d_act * (1 - act) * (act + k))
        return (t - 1, _carry(kept, tf.matmul(dz, recurrent_t), dh), _carry(kept, dc_step * act[:, n:2 * n], dc),
                dzs.write(t, dz))

    dh, dc, dzs = span.backward(body, (dh_after, d_c, tf.TensorArray(acts.dtype, size=steps)))
    return dzs.stack(), _plus(dh, dh_before), dc


# GRU with reset_after=True, Keras gate order z (update), r (reset), h (candidate).


def gru_sequence(xg: Any, h0: Any, recurrent: Any, recurrent_bias: Any, ids: Any = None, keep: Any = None) -> Any:
    """The GRU over projected inputs ``xg`` (time, batch, 3H, input bias included; or a table
    with ``ids``, see :func:`project_steps`), with ``keep`` the mask (time, batch, 1) or None:
    the h of every step (carried through masked steps)."""

    @tf.custom_gradient
    def run(xg: Any, h0: Any, recurrent: Any, recurrent_bias: Any) -> Any:
        span = Span(_count(xg, ids), keep)
        hs, zr, cand, rh = _gru_forward(step_inputs(xg, ids), span, h0, recurrent, recurrent_bias)
        hs = span.fill(hs, h0)

        def grad(d_hs: Any) -> tuple:
            d_xg, d_rec, dh0 = _gru_backward(_zeros_if_none(d_hs, hs), _with_first(h0, hs), zr, cand, rh,
                                             recurrent, span)
            return (input_gradient(d_xg, xg, ids), dh0, _flat_product(_with_first(h0, hs), d_rec),
                    tf.reduce_sum(d_rec, [0, 1]))

        return hs, grad

    return run(xg, h0, recurrent, recurrent_bias)


def _gru_forward(inputs: Any, span: Span, h0: Any, recurrent: Any, recurrent_bias: Any) -> tuple:
    """Forward loop over ``span`` (``inputs(t)``: step t's projected inputs); keeps h, the z and
    r gates, the candidate and h @ U_h + b_h for the backward pass."""
    n = recurrent.shape[0]
    keep = span.reader()

    def body(t: Any, h: Any, hs: Any, zrs: Any, cands: Any, rhs: Any) -> tuple:
        x = inputs(t)
        rec = tf.matmul(h, recurrent) + recurrent_bias
        zr = tf.sigmoid(x[:, :2 * n] + rec[:, :2 * n])
        rh = rec[:, 2 * n:]
        cand = tf.tanh(x[:, 2 * n:] + zr[:, n:] * rh)
        h = _carry(keep(t), cand + zr[:, :n] * (h - cand), h)
        return t + 1, h, hs.write(t, h), zrs.write(t, zr), cands.write(t, cand), rhs.write(t, rh)

    loop = span.forward(body, (h0, *_arrays(h0.dtype, span.steps, 4)))
    return tuple(array.stack() for array in loop[1:])


def _gru_backward(d_hs: Any, h_prev: Any, zr: Any, cand: Any, rh: Any, recurrent: Any, span: Span) -> tuple:
    """Reverse loop: gradients of the projected inputs and of ``h @ U + b_h`` (both (T, B, 3H)), and of h0."""
    n = recurrent.shape[0]
    steps = _steps(d_hs)
    reads = [tf.TensorArray(d_hs.dtype, size=steps).unstack(a) for a in (d_hs, h_prev, zr, cand, rh)]
    dh_in, h_prevs, zrs, cands, rhs = reads
    keep = span.reader()
    dh_after, dh_before = span.outside(d_hs)

    def body(t: Any, dh: Any, d_xs: Any, d_recs: Any) -> tuple:
        gates, hh, hp = zrs.read(t), cands.read(t), h_prevs.read(t)
        z, r = gates[:, :n], gates[:, n:]
        kept, dh = keep(t), dh + dh_in.read(t)
        dh_step = _kept_only(kept, dh)
        da = dh_step * (1 - z) * (1 - hh * hh)
        dzr = tf.concat([dh_step * (hp - hh), da * rhs.read(t)], 1) * gates * (1 - gates)
        d_rec = tf.concat([dzr, da * r], 1)
        dh = _carry(kept, dh_step * z + tf.matmul(d_rec, recurrent, transpose_b=True), dh)
        return t - 1, dh, d_xs.write(t, tf.concat([dzr, da], 1)), d_recs.write(t, d_rec)

    dh, d_xs, d_recs = span.backward(body, (dh_after, *_arrays(d_hs.dtype, steps, 2)))
    return d_xs.stack(), d_recs.stack(), _plus(dh, dh_before)


# SimpleRNN with tanh.


def simple_sequence(xg: Any, h0: Any, recurrent: Any, ids: Any = None, keep: Any = None) -> Any:
    """The SimpleRNN over projected inputs ``xg`` (time, batch, H; or a table with ``ids``, see
    :func:`project_steps`), with ``keep`` the mask (time, batch, 1) or None: the h of every step
    (carried through masked steps)."""

    @tf.custom_gradient
    def run(xg: Any, h0: Any, recurrent: Any) -> Any:
        inputs, span = step_inputs(xg, ids), Span(_count(xg, ids), keep)
        kept = span.reader()

        def body(t: Any, h: Any, hs: Any) -> tuple:
            h = _carry(kept(t), tf.tanh(inputs(t) + tf.matmul(h, recurrent)), h)
            return t + 1, h, hs.write(t, h)

        hs = span.forward(body, (h0, tf.TensorArray(h0.dtype, size=span.steps)))[1].stack()
        hs = span.fill(hs, h0)

        def grad(d_hs: Any) -> tuple:
            da, dh0 = _simple_backward(_zeros_if_none(d_hs, hs), hs, recurrent, span)
            return input_gradient(da, xg, ids), dh0, _flat_product(_with_first(h0, hs), da)

        return hs, grad

    return run(xg, h0, recurrent)


def _simple_backward(d_hs: Any, hs: Any, recurrent: Any, span: Span) -> tuple:
    """Reverse loop: the gradients of the pre-activations (time, batch, H) and of h0."""
    steps = _steps(hs)
    dh_in, h_now = (tf.TensorArray(hs.dtype, size=steps).unstack(a) for a in (d_hs, hs))
    keep = span.reader()
    dh_after, dh_before = span.outside(d_hs)

    def body(t: Any, dh: Any, das: Any) -> tuple:
        h, kept, dh = h_now.read(t), keep(t), dh + dh_in.read(t)
        da = _kept_only(kept, dh * (1 - h * h))
        return t - 1, _carry(kept, tf.matmul(da, recurrent, transpose_b=True), dh), das.write(t, da)

    dh, das = span.backward(body, (dh_after, tf.TensorArray(hs.dtype, size=steps)))
    return das.stack(), _plus(dh, dh_before)
