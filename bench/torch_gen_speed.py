#!/usr/bin/env python3
"""Peer generation speed: a model saved by ``torch_charlm.py --save``, sampled at several batch sizes.

Runs under the torch Python (it imports neither seqapp nor the bench package). The loop is
the peer's own (``torch_generate.py``): softmax of the last logits, ``torch.multinomial``,
feed the drawn characters back with the state carried, decode them to text. The first step
(seed pass and first draw) is timed apart; the rest is the steady state. Prints one JSON
object: ``{"batch_<B>": {"batch", "steps", "first_call_s", "chars_per_s"}, ...}``.

    python torch_gen_speed.py --model lm.pt --batches 1,64 --steps 20000,2000
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn


def load(path: str) -> tuple[nn.Module, list[str]]:
    """The saved character model (as ``torch_generate.py`` rebuilds it) and its vocabulary."""
    saved = torch.load(path)
    vocab = saved["vocab"]
    rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[saved["cell"]]

    class CharLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(len(vocab), saved["embed"])
            self.rnn = rnn_cls(saved["embed"], saved["units"], batch_first=True)
            self.head = nn.Linear(saved["units"], len(vocab))

        def forward(self, x: torch.Tensor, state: object = None) -> tuple:
            out, state = self.rnn(self.embed(x), state)
            return self.head(out), state

    model = CharLM()
    model.load_state_dict(saved["state"])
    return model.eval(), vocab


def speed(model: nn.Module, vocab: list[str], batch: int, steps: int) -> dict:
    """Sample ``steps`` characters for each of ``batch`` sequences; time the first step apart."""
    torch.manual_seed(0)
    texts: list[list[str]] = [[] for _ in range(batch)]
    with torch.no_grad():
        start = time.perf_counter()
        logits, state = model(torch.zeros((batch, 1), dtype=torch.long))
        tok = torch.multinomial(torch.softmax(logits[:, -1], -1), 1)
        first = time.perf_counter()
        for _ in range(steps - 1):
            for text, i in zip(texts, tok[:, 0].tolist()):
                text.append(vocab[i])
            logits, state = model(tok, state)
            tok = torch.multinomial(torch.softmax(logits[:, -1], -1), 1)
        end = time.perf_counter()
    return {"batch": batch, "steps": steps, "first_call_s": round(first - start, 4),
            "chars_per_s": round((steps - 1) * batch / (end - first), 1)}


def main() -> None:
    """Parse the flags, time each batch size, print the JSON object."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--steps", default="2000,500", help="steps per batch size, in the same order")
    args = parser.parse_args()
    model, vocab = load(args.model)
    batches = [int(b) for b in args.batches.split(",")]
    steps = [int(s) for s in args.steps.split(",")]
    print(json.dumps({f"batch_{b}": speed(model, vocab, b, s) for b, s in zip(batches, steps)}))


if __name__ == "__main__":
    main()
