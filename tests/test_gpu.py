"""On a GPU, seqapp's recurrent layers run the fused cuDNN kernels (skipped on CPU-only machines).

The layers come from :func:`seqapp.layers.recurrent_stack`, as every task builds them
(dropout outside the cells, default activations), so a change that pushed them off the
cuDNN path (recurrent dropout, another activation, a cell wrapper) fails here.
"""

from __future__ import annotations

import pytest


def gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_layers_take_the_cudnn_kernel_on_a_gpu(cell):
    if not gpus():
        pytest.skip("no GPU visible to TensorFlow")
    import keras
    import tensorflow as tf

    from seqapp.layers import recurrent_stack

    stack = recurrent_stack(cell, 32, layers=2, dropout=0.2, return_sequences=True)
    model = keras.Sequential([keras.Input((7, 5)), *stack])

    @tf.function
    def forward(x):
        return model(x, training=True)

    graph = forward.get_concrete_function(tf.TensorSpec((4, 7, 5), tf.float32)).graph
    kinds = {op.type for op in graph.get_operations()}
    for function in graph._functions.values():  # noqa: SLF001 (the bodies of nested functions)
        kinds |= {node.op for node in function.definition.node_def}
    assert "CudnnRNNV3" in kinds, sorted(kinds)
    assert bool(tf.reduce_all(tf.math.is_finite(forward(tf.ones((4, 7, 5))))))
