#!/usr/bin/env python3
"""Profile of the LSTM training loop: where a step's time goes, seqapp's fast loop beside PyTorch's.

A training step of LSTM(256) at batch 64 x 100 steps splits into the recurrent products
(one ``h @ U`` per step forward, one ``dz @ U^T`` per step backward), the gate arithmetic
around them, and the few large products outside the loops (input projection, weight
gradients). This script times each piece alone on this machine, in one process per side:

- ``sgemm``: numpy float32 2048 x 2048, the machine's bound;
- ``step GEMM``: the recurrent product 64 x 256 @ 256 x 1024 alone, 100 dependent steps in one
  XLA-compiled loop (seqapp's setting), and in a PyTorch loop of ``torch.mm`` (the peer's);
- ``forward`` and ``forward + backward`` of the whole LSTM(256) layer on 256-wide inputs (input
  projection included): seqapp's :func:`seqapp.fastrnn.project` and
  :func:`seqapp.fastrnn.lstm_sequence` under XLA, and ``torch.nn.LSTM``;
- which kernel PyTorch runs for its LSTM (``torch.profiler``: oneDNN's fused RNN primitive
  ``mkldnn_rnn_layer``, or a per-step ``addmm`` loop).

Each figure is GFLOP/s of the layer's matrix products (per step forward 2 x 64 x 512 x 1024:
input and recurrent; three times that forward + backward) and the share of the sgemm bound,
so the gap between the layer and its products is the gate arithmetic and loop overhead.
It never asserts a speed.

    python bench/lstm_profile.py                               # seqapp side only
    python bench/lstm_profile.py --torch-python /tmp/vtorch/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH, UNITS, STEPS = 64, 256, 100
STEP_FLOPS = 2 * BATCH * UNITS * 4 * UNITS  # one recurrent product h @ U


def best_time(call, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``call`` (after one warm-up call)."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def seqapp_side(repeats: int) -> dict:
    """Seconds per call of each piece on seqapp's side (TensorFlow, XLA)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from seqapp.fastrnn import keep_freed_memory, lstm_sequence, project

    keep_freed_memory()  # as training does
    rng = tf.random.Generator.from_seed(0)
    recurrent = tf.Variable(rng.normal([UNITS, 4 * UNITS]) * 0.05)
    kernel = tf.Variable(rng.normal([UNITS, 4 * UNITS]) * 0.05)
    bias = tf.Variable(tf.zeros([4 * UNITS]))
    x = rng.normal([STEPS, BATCH, UNITS])
    h0 = tf.zeros([BATCH, UNITS])

    @tf.function(jit_compile=True)
    def gemm_loop(h):
        def body(t, h):
            return t + 1, tf.matmul(h, recurrent)[:, :UNITS] * 0.5
        return tf.while_loop(lambda t, _: t < STEPS, body, (tf.constant(0), h))[1]

    @tf.function(jit_compile=True)
    def forward(x):
        hs, _ = lstm_sequence(project(x, kernel, bias), h0, h0, recurrent)
        return hs

    @tf.function(jit_compile=True)
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            hs, _ = lstm_sequence(project(x, kernel, bias), h0, h0, recurrent)
            loss = tf.reduce_sum(hs)
        return tape.gradient(loss, [x, kernel, bias, recurrent])

    return {
        "step_gemm": best_time(lambda: gemm_loop(h0).numpy(), repeats) / STEPS,
        "forward": best_time(lambda: forward(x).numpy(), repeats),
        "forward_backward": best_time(lambda: [g.numpy() for g in forward_backward(x)], repeats),
    }


TORCH_SIDE = r'''
import json, sys, time
import torch
B, H, T, R = (int(a) for a in sys.argv[1:5])
torch.manual_seed(0)
def best(call):
    call(); times = []
    for _ in range(R):
        s = time.perf_counter(); call(); times.append(time.perf_counter() - s)
    return min(times)
u = torch.randn(H, 4 * H) * 0.05
h = torch.zeros(B, H)
def gemm_loop():
    x = h
    for _ in range(T):
        x = torch.mm(x, u)[:, :H] * 0.5
    return x
lstm = torch.nn.LSTM(H, H)
x = torch.randn(T, B, H, requires_grad=True)
def forward():
    with torch.no_grad():
        return lstm(x)[0]
def forward_backward():
    out = lstm(x)[0]
    out.sum().backward()
result = {"step_gemm": best(gemm_loop) / T, "forward": best(forward), "forward_backward": best(forward_backward),
          "torch": torch.__version__, "mkldnn": torch.backends.mkldnn.is_available() and torch._C._get_mkldnn_enabled(),
          "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as prof:
    forward_backward()
ops = sorted(((e.key, e.self_cpu_time_total) for e in prof.key_averages()), key=lambda kv: -kv[1])
result["top_ops"] = [[k, round(v / 1e3, 2)] for k, v in ops[:6]]
print(json.dumps(result))
'''


def torch_side(python: str, repeats: int) -> dict:
    """The same pieces in PyTorch (``torch.nn.LSTM(256, 256)``, a forward + backward that also
    gives the input's gradient, as on seqapp's side)."""
    out = subprocess.run([python, "-c", TORCH_SIDE, str(BATCH), str(UNITS), str(STEPS), str(repeats)],
                         capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(sides: dict, gflops: float) -> str:
    """The figures as a Markdown table: ms per call, GFLOP/s of the recurrent products, share of sgemm."""
    layer = 2 * STEPS * STEP_FLOPS  # input and recurrent products of 100 steps
    flops = {"step_gemm": STEP_FLOPS, "forward": layer, "forward_backward": 3 * layer}
    names = {"step_gemm": "one recurrent product, 64x256 @ 256x1024 (in a 100-step loop)",
             "forward": "LSTM(256) forward, 100 steps, 256-wide inputs",
             "forward_backward": "LSTM(256) forward + backward, 100 steps"}
    lines = [f"sgemm bound (numpy 2048x2048): {gflops:.0f} GFLOP/s", "",
             "| piece | " + " | ".join(f"{side} ms | {side} GFLOP/s (% of sgemm)" for side in sides) + " |",
             "| --- | " + " | ".join("---: | ---:" for _ in sides) + " |"]
    for key, label in names.items():
        cells = []
        for figures in sides.values():
            seconds = figures[key]
            rate = flops[key] / seconds / 1e9
            cells.append(f"{seconds * 1e3:.3f} | {rate:.0f} ({100 * rate / gflops:.0f}%)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default=None, help="a Python with torch for the peer's side")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per piece (the fastest counts)")
    parser.add_argument("--output", type=Path, default=None, help="also write the table and details (Markdown)")
    args = parser.parse_args()
    from bench.machine import machine_info
    from bench.peers import find_torch_python

    machine = machine_info()
    sides = {"seqapp": seqapp_side(args.repeats)}
    python = args.torch_python or find_torch_python()
    details = {}
    if python:
        details = torch_side(python, args.repeats)
        sides["PyTorch"] = details
    text = "\n".join([
        f"CPU: {machine.get('cpu_model')}, {machine.get('cores')} cores; AVX2 {machine.get('avx2')}, "
        f"AVX-512 {machine.get('avx512')} {' '.join(machine.get('avx512_flags') or [])}; "
        f"load average {os.getloadavg()[0]:.1f}", "",
        table(sides, machine["sgemm_gflops"]), "",
        *([f"PyTorch {details['torch']}: oneDNN enabled {details['mkldnn']}, CPU capability "
           f"{details['cpu_capability']}, {details['threads']} threads; busiest operators of one forward + "
           f"backward (self ms): " + ", ".join(f"{k} {v}" for k, v in details["top_ops"])] if details else []),
    ])
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
