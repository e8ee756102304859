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

:func:`accelerate` swaps each eligible layer's ``inner_loop`` (an attribute of that layer
instance) for the fast one. The weights are the layer's own variables in Keras's gate
order, so nothing about the saved model changes: ``model.keras`` holds stock layers and
loads without seqapp. The fast loop is exact or absent: it gives the stock layer's outputs
and gradients (to float rounding; ``tests/test_fastrnn.py`` checks every cell at T=200,
256 units, eager, XLA and Bidirectional), and whatever it does not cover keeps Keras's own
code. :func:`unsupported` leaves a layer untouched for good (subclasses, ``unroll``, dropout,
no bias, activations other than Keras's tanh and sigmoid, ``reset_after=False``, mixed
precision, a mask in the model's graph; on a GPU nothing is touched, Keras uses cuDNN
there). At call time the fast loop runs only in training (``training=True``) without a
mask. When no recurrent layer of a model takes it, one note goes to the ``seqapp`` logger.

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
    calls = recurrent_calls(model)
    refusals = [(layer, unsupported(layer, called)) for layer, called in calls]
    fresh = [layer for layer, why in refusals if why is None and not hasattr(layer, _STOCK)]
    usage = _Usage(fresh)
    for layer in fresh:
        stock = layer.inner_loop
        object.__setattr__(layer, _STOCK, stock)  # plain attributes: Keras tracks nothing here
        object.__setattr__(layer, "inner_loop", _fast_inner_loop(layer, stock, usage))
    fast = [layer for layer, _ in calls if hasattr(layer, _STOCK)]
    if calls and not fast:
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
    return [layer for layer, _ in recurrent_calls(model)]


def recurrent_calls(model: Any) -> list[tuple[Any, Any]]:
    """``(layer, called)`` for each recurrent layer of ``model`` (:func:`recurrent_layers`):
    ``called`` is the layer whose calls the model's graph records, the layer itself or its
    Bidirectional wrapper."""
    import keras

    kinds = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)
    found: dict[int, tuple[Any, Any]] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.Bidirectional):
            for inner in (layer.forward_layer, layer.backward_layer):
                found[id(inner)] = (inner, layer)
        elif isinstance(layer, kinds):
            found.setdefault(id(layer), (layer, layer))
    return [pair for pair in found.values() if isinstance(pair[0], kinds)]


def unsupported(layer: Any, called: Any = None) -> str | None:
    """Why ``layer`` must keep Keras's own loop for good, or None when it can take the fast one.

    ``called`` (default ``layer``) is the layer the model's graph calls (:func:`recurrent_calls`).
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
        (masked_in_graph(layer if called is None else called), "a masked input"),
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


def masked_in_graph(called: Any) -> bool:
    """Whether the model's graph passes a mask to ``called``, as Keras's ``Layer.__call__`` does:
    an explicit ``mask=``, or the mask of the only tensor argument (after
    ``Embedding(mask_zero=True)`` or a ``Masking`` layer). With a second tensor argument
    (``initial_state``) Keras passes no mask, and the call takes the fast loop, as in the
    translate decoder. A model without a graph (subclassed) shows nothing here; a mask there
    is seen at call time, where the stock loop takes the call."""
    import keras

    def is_tensor(value: Any) -> bool:
        return any(isinstance(item, keras.KerasTensor) for item in keras.tree.flatten(value))

    for node in getattr(called, "_inbound_nodes", ()):
        if node.arguments is None:
            continue
        explicit = node.arguments.kwargs.get("mask")
        if any(m is not None for m in keras.tree.flatten(explicit)):
            return True
        tensors = [value for name, value in [*enumerate(node.arguments.args), *node.arguments.kwargs.items()]
                   if name != "mask" and is_tensor(value)]
        if len(tensors) == 1 and any(getattr(t, "_keras_mask", None) is not None
                                     for t in keras.tree.flatten(tensors[0])):
            return True
    return False


def _note(refusals: list[tuple[str, str | None]]) -> None:
    """One line to the ``seqapp`` logger: no recurrent layer of a model takes the fast loop, and why."""
    why = "; ".join(f"{name}: {reason}" for name, reason in refusals)
    log.info("fast_rnn: no recurrent layer takes seqapp's fast loop, Keras's own loop trains them (%s)", why)


class _Usage:
    """Which layers of one :func:`accelerate` call took the fast loop in training calls.

    A mask the model's graph did not show (a subclassed model, a mask passed by hand) sends
    a training call to the stock loop. When every layer has fallen back so and none ran fast,
    one note says so. A few Python operations per call, at trace time in a compiled step.
    """

    def __init__(self, layers: list) -> None:
        self.names = {id(layer): layer.name for layer in layers}
        self.fast: set[int] = set()
        self.stock: set[int] = set()
        self.noted = False

    def record(self, layer: Any, fast: bool) -> None:
        (self.fast if fast else self.stock).add(id(layer))
        if not self.noted and not self.fast and len(self.stock) == len(self.names):
            self.noted = True
            _note([(name, "a mask at call time") for name in self.names.values()])


def _fast_inner_loop(layer: Any, stock: Any, usage: _Usage) -> Any:
    """The replacement for ``layer.inner_loop``: the fast loop for a training call without a
    mask, else ``stock``; ``usage`` hears which a training call took."""

    def inner_loop(sequences: Any, initial_state: Any, mask: Any, training: Any = False) -> Any:
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if training is not True:
            return stock(sequences, initial_state, mask=mask, training=training)
        usage.record(layer, fast=mask is None)
        if mask is not None:
            return stock(sequences, initial_state, mask=mask, training=training)
        return run_layer(layer, sequences, initial_state)

    return inner_loop


def run_layer(layer: Any, sequences: Any, initial_state: Any) -> tuple[Any, Any, list]:
    """``inner_loop``'s answer for ``layer``: last output, outputs (batch-major, loop order), states."""
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
    if isinstance(layer, keras.layers.LSTM):
        outputs, c_last = lstm_sequence(xg, states[0], states[1], recurrent, ids)
        new_states = [outputs[-1], c_last]
    elif isinstance(layer, keras.layers.GRU):
        outputs = gru_sequence(xg, states[0], recurrent, bias[1], ids)
        new_states = [outputs[-1]]
    else:
        outputs = simple_sequence(xg, states[0], recurrent, ids)
        new_states = [outputs[-1]]
    last = outputs[-1]
    batch_major = tf.transpose(outputs, [1, 0, 2]) if layer.return_sequences else last[:, None, :]
    return last, batch_major, new_states


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


# -- loops -----------------------------------------------------------------------------


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


# LSTM, Keras gate order i, f, c (the candidate, here g), o. All four activations are one
# sigmoid over the gate inputs: tanh(x) = 2 sigmoid(2x) - 1, so with m = 2 on the candidate's
# columns and 1 elsewhere, act = m sigmoid(m z) - (m - 1), and its derivative is
# (1 - act) (act + m - 1): one fused pass each way instead of one per gate.


def lstm_sequence(xg: Any, h0: Any, c0: Any, recurrent: Any, ids: Any = None) -> tuple[Any, Any]:
    """The LSTM over projected inputs ``xg`` (time, batch, 4H; or a table with ``ids``, see
    :func:`project_steps`): all outputs h and the last c."""

    @tf.custom_gradient
    def run(xg: Any, h0: Any, c0: Any, recurrent: Any) -> Any:
        acts, cs, c_last = _lstm_forward(step_inputs(xg, ids), _count(xg, ids), h0, c0, recurrent)
        tanh_cs = tf.tanh(cs)
        hs = acts[:, :, 3 * recurrent.shape[0]:] * tanh_cs  # as in the loop, for all steps at once

        def grad(d_hs: Any, d_c: Any) -> tuple:
            d_hs, d_c = _zeros_if_none(d_hs, hs), _zeros_if_none(d_c, c0)
            dz, dh0, dc0 = _lstm_backward(d_hs, d_c, acts, tanh_cs, _with_first(c0, cs), recurrent)
            return input_gradient(dz, xg, ids), dh0, dc0, _flat_product(_with_first(h0, hs), dz)

        return (hs, c_last), grad

    return run(xg, h0, c0, recurrent)


def _candidate_columns(units: int, dtype: Any) -> Any:
    """m - 1 of the comment above: 1 on the candidate's columns, 0 on the gates'."""
    return tf.concat([tf.zeros([2 * units], dtype), tf.ones([units], dtype), tf.zeros([units], dtype)], 0)


def _lstm_forward(inputs: Any, steps: Any, h0: Any, c0: Any, recurrent: Any) -> tuple:
    """Forward loop over ``steps`` (``inputs(t)``: step t's projected inputs): the activated gates
    [i, f, g, o] and c of every step, and the last c.

    The outputs h are not written here: ``o tanh(c)`` is one pass over all steps afterwards. With
    two records per step the loop body is at most 8 thunks, which XLA's CPU runtime executes in
    order on one thread instead of handing each to its thread pool (measured: 3-5% of a step).
    """
    n = recurrent.shape[0]
    k = _candidate_columns(n, h0.dtype)

    def body(t: Any, h: Any, c: Any, acts: Any, cs: Any) -> tuple:
        z = inputs(t) + tf.matmul(h, recurrent)
        act = (1 + k) * tf.sigmoid((1 + k) * z) - k
        c = act[:, n:2 * n] * c + act[:, :n] * act[:, 2 * n:3 * n]
        h = act[:, 3 * n:] * tf.tanh(c)
        return t + 1, h, c, acts.write(t, act), cs.write(t, c)

    loop = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(0), h0, c0, *_arrays(h0.dtype, steps, 2)))
    return loop[3].stack(), loop[4].stack(), loop[2]


def _lstm_backward(d_hs: Any, d_c: Any, acts: Any, tanh_cs: Any, c_prevs: Any, recurrent: Any) -> tuple:
    """Reverse loop: the gradients of the gate inputs (time, batch, 4H) and of h0 and c0."""
    n = recurrent.shape[0]
    k = _candidate_columns(n, acts.dtype)
    steps = _steps(acts)
    dh_in, act_in, tanh_c, c_prev = (tf.TensorArray(acts.dtype, size=steps).unstack(a)
                                     for a in (d_hs, acts, tanh_cs, c_prevs))
    recurrent_t = tf.transpose(recurrent)  # once: the loop's product then reads U^T in order

    def body(t: Any, dh: Any, dc: Any, dzs: Any) -> tuple:
        act, tc = act_in.read(t), tanh_c.read(t)
        dh = dh + dh_in.read(t)
        dc = dc + dh * act[:, 3 * n:] * (1 - tc * tc)
        d_act = tf.concat([dc * act[:, 2 * n:3 * n], dc * c_prev.read(t), dc * act[:, :n], dh * tc], 1)
        dz = d_act * (1 - act) * (act + k)
        return t - 1, tf.matmul(dz, recurrent_t), dc * act[:, n:2 * n], dzs.write(t, dz)

    loop = tf.while_loop(lambda t, *_: t >= 0, body,
                         (steps - 1, tf.zeros_like(d_c), d_c, tf.TensorArray(acts.dtype, size=steps)))
    return loop[3].stack(), loop[1], loop[2]


# GRU with reset_after=True, Keras gate order z (update), r (reset), h (candidate).


def gru_sequence(xg: Any, h0: Any, recurrent: Any, recurrent_bias: Any, ids: Any = None) -> Any:
    """The GRU over projected inputs ``xg`` (time, batch, 3H, input bias included; or a table
    with ``ids``, see :func:`project_steps`): all outputs h."""

    @tf.custom_gradient
    def run(xg: Any, h0: Any, recurrent: Any, recurrent_bias: Any) -> Any:
        hs, zr, cand, rh = _gru_forward(step_inputs(xg, ids), _count(xg, ids), h0, recurrent, recurrent_bias)

        def grad(d_hs: Any) -> tuple:
            d_xg, d_rec, dh0 = _gru_backward(_zeros_if_none(d_hs, hs), _with_first(h0, hs), zr, cand, rh,
                                             recurrent)
            return (input_gradient(d_xg, xg, ids), dh0, _flat_product(_with_first(h0, hs), d_rec),
                    tf.reduce_sum(d_rec, [0, 1]))

        return hs, grad

    return run(xg, h0, recurrent, recurrent_bias)


def _gru_forward(inputs: Any, steps: Any, h0: Any, recurrent: Any, recurrent_bias: Any) -> tuple:
    """Forward loop over ``steps`` (``inputs(t)``: step t's projected inputs); keeps h, the z and
    r gates, the candidate and h @ U_h + b_h for the backward pass."""
    n = recurrent.shape[0]

    def body(t: Any, h: Any, hs: Any, zrs: Any, cands: Any, rhs: Any) -> tuple:
        x = inputs(t)
        rec = tf.matmul(h, recurrent) + recurrent_bias
        zr = tf.sigmoid(x[:, :2 * n] + rec[:, :2 * n])
        rh = rec[:, 2 * n:]
        cand = tf.tanh(x[:, 2 * n:] + zr[:, n:] * rh)
        h = cand + zr[:, :n] * (h - cand)
        return t + 1, h, hs.write(t, h), zrs.write(t, zr), cands.write(t, cand), rhs.write(t, rh)

    loop = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(0), h0, *_arrays(h0.dtype, steps, 4)))
    return tuple(array.stack() for array in loop[2:])


def _gru_backward(d_hs: Any, h_prev: Any, zr: Any, cand: Any, rh: Any, recurrent: Any) -> tuple:
    """Reverse loop: gradients of the projected inputs and of ``h @ U + b_h`` (both (T, B, 3H)), and of h0."""
    n = recurrent.shape[0]
    steps = _steps(d_hs)
    reads = [tf.TensorArray(d_hs.dtype, size=steps).unstack(a) for a in (d_hs, h_prev, zr, cand, rh)]
    dh_in, h_prevs, zrs, cands, rhs = reads

    def body(t: Any, dh: Any, d_xs: Any, d_recs: Any) -> tuple:
        gates, hh, hp = zrs.read(t), cands.read(t), h_prevs.read(t)
        z, r = gates[:, :n], gates[:, n:]
        dh = dh + dh_in.read(t)
        da = dh * (1 - z) * (1 - hh * hh)
        dzr = tf.concat([dh * (hp - hh), da * rhs.read(t)], 1) * gates * (1 - gates)
        d_rec = tf.concat([dzr, da * r], 1)
        dh = dh * z + tf.matmul(d_rec, recurrent, transpose_b=True)
        return t - 1, dh, d_xs.write(t, tf.concat([dzr, da], 1)), d_recs.write(t, d_rec)

    loop = tf.while_loop(lambda t, *_: t >= 0, body,
                         (steps - 1, tf.zeros_like(h_prev[0]), *_arrays(d_hs.dtype, steps, 2)))
    return loop[2].stack(), loop[3].stack(), loop[1]


# SimpleRNN with tanh.


def simple_sequence(xg: Any, h0: Any, recurrent: Any, ids: Any = None) -> Any:
    """The SimpleRNN over projected inputs ``xg`` (time, batch, H; or a table with ``ids``, see
    :func:`project_steps`): all outputs h."""

    @tf.custom_gradient
    def run(xg: Any, h0: Any, recurrent: Any) -> Any:
        inputs, steps = step_inputs(xg, ids), _count(xg, ids)

        def body(t: Any, h: Any, hs: Any) -> tuple:
            h = tf.tanh(inputs(t) + tf.matmul(h, recurrent))
            return t + 1, h, hs.write(t, h)

        hs = tf.while_loop(lambda t, *_: t < steps, body,
                           (tf.constant(0), h0, tf.TensorArray(h0.dtype, size=steps)))[2].stack()

        def grad(d_hs: Any) -> tuple:
            da, dh0 = _simple_backward(_zeros_if_none(d_hs, hs), hs, recurrent)
            return input_gradient(da, xg, ids), dh0, _flat_product(_with_first(h0, hs), da)

        return hs, grad

    return run(xg, h0, recurrent)


def _simple_backward(d_hs: Any, hs: Any, recurrent: Any) -> tuple:
    """Reverse loop: the gradients of the pre-activations (time, batch, H) and of h0."""
    steps = _steps(hs)
    dh_in, h_now = (tf.TensorArray(hs.dtype, size=steps).unstack(a) for a in (d_hs, hs))

    def body(t: Any, dh: Any, das: Any) -> tuple:
        h = h_now.read(t)
        da = (dh + dh_in.read(t)) * (1 - h * h)
        return t - 1, tf.matmul(da, recurrent, transpose_b=True), das.write(t, da)

    loop = tf.while_loop(lambda t, *_: t >= 0, body,
                         (steps - 1, tf.zeros_like(hs[0]), tf.TensorArray(hs.dtype, size=steps)))
    return loop[2].stack(), loop[1]
