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
loads without seqapp. The fast loop is taken only while training (``training=True``); in
every other case (inference, export, a mask, dropout inside the cell, other activations,
``reset_after=False``, mixed precision, a GPU where Keras uses cuDNN) the stock code runs.
It also asks glibc to keep freed memory (:func:`keep_freed_memory`), for stock and fast
loops alike. ``train.fast_rnn`` turns it on for a run (:func:`seqapp.training.prepare`).
"""

from __future__ import annotations

import ctypes
from typing import Any

import tensorflow as tf

_STOCK = "_seqapp_stock_inner_loop"  # the attribute that keeps the layer's own inner_loop
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_heap_kept: bool | None = None


# -- choosing the layers ---------------------------------------------------------------


def accelerate(model: Any) -> int:
    """Give every eligible recurrent layer of ``model`` the fast training loop; return how many.

    Layers inside ``Bidirectional`` wrappers and nested models count. Calling it again
    changes nothing. On a machine with a GPU nothing is changed (Keras uses cuDNN there).
    """
    if tf.config.list_logical_devices("GPU"):
        return 0
    keep_freed_memory()
    count = 0
    for layer in recurrent_layers(model):
        if not hasattr(layer, _STOCK) and unsupported(layer) is None:
            stock = layer.inner_loop
            object.__setattr__(layer, _STOCK, stock)  # plain attributes: Keras tracks nothing here
            object.__setattr__(layer, "inner_loop", _fast_inner_loop(layer, stock))
            count += 1
    return count


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of handing large blocks back to the OS.

    A compiled training step allocates its large temporaries (gate buffers of tens of MB)
    afresh every step; glibc serves blocks that size with mmap and unmaps them on free, so
    each step page-faults all of them in again: a quarter to a third of an LSTM-256 step's
    CPU time on a 2-core machine. With mmap off and a high trim threshold they stay in the
    heap. Process-wide, once; a no-op (False) where the C library is not glibc.
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
    """The stock LSTM, GRU and SimpleRNN layers of ``model``, also inside Bidirectional wrappers."""
    import keras

    kinds = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN)
    found = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.Bidirectional):
            found += [layer.forward_layer, layer.backward_layer]
        elif isinstance(layer, kinds):
            found.append(layer)
    return [layer for layer in found if type(layer) in kinds]  # subclasses may change the cell's maths


def unsupported(layer: Any) -> str | None:
    """Why ``layer`` cannot take the fast loop at all, or None when it can."""
    cell = layer.cell
    if getattr(cell, "recurrent_dropout", 0):
        return "recurrent_dropout"
    if not cell.use_bias:
        return "use_bias=False"
    if layer.unroll:
        return "unroll=True"
    if _name(cell.activation) != "tanh":
        return "activation is not tanh"
    if hasattr(cell, "recurrent_activation") and _name(cell.recurrent_activation) != "sigmoid":
        return "recurrent_activation is not sigmoid"
    if hasattr(cell, "reset_after") and not cell.reset_after:
        return "reset_after=False"
    return None


def _name(function: Any) -> str:
    return getattr(function, "__name__", "")


def applies(layer: Any, mask: Any, training: Any) -> bool:
    """Whether this call of ``layer`` takes the fast loop (see the module docstring)."""
    cell = layer.cell
    return (training is True and mask is None and not (getattr(cell, "dropout", 0) > 0)
            and cell.compute_dtype == "float32" and cell.kernel.dtype == "float32")


def _fast_inner_loop(layer: Any, stock: Any) -> Any:
    """The replacement for ``layer.inner_loop``: the fast loop where it applies, else ``stock``."""

    def inner_loop(sequences: Any, initial_state: Any, mask: Any, training: Any = False) -> Any:
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if not applies(layer, mask, training):
            return stock(sequences, initial_state, mask=mask, training=training)
        return run_layer(layer, sequences, initial_state)

    return inner_loop


def run_layer(layer: Any, sequences: Any, initial_state: Any) -> tuple[Any, Any, list]:
    """``inner_loop``'s answer for ``layer``: last output, outputs (batch-major, loop order), states."""
    import keras

    cell = layer.cell
    states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
    states = [s[0] if isinstance(s, (list, tuple)) else s for s in states]  # GRU may nest its one state
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
