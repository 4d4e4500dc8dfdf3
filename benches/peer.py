#!/usr/bin/env python3
"""The peer for `forewarn bench`: the straightforward Python consumer a data
scientist would write for the same job, on the same topic.

Per message: json.loads, append to the device's window; when a device has
`horizon` new readings, run the model for that device alone from its own
(h, c) (kept in a dict), compare the batch with the forecast made after the
previous batch (MSE and per-channel shares), keep the new forecast and state.
Same model shape as the Rust service (stacked LSTM + linear head on the last
step), random weights: the peer measures throughput, not detection.

Prints `peer_readings_per_s=<n>` as its last line. Stops after --seconds
(measured from the first message), after --max-messages, or when the topic
has been drained (nothing for 5 s).

Run via `forewarn bench` (which installs the dependencies with
benches/peer-setup.sh and sets PYTHONPATH=.tools/peer).
"""

import argparse
import collections
import json
import sys
import time

import torch
from confluent_kafka import Consumer


class Forecaster(torch.nn.Module):
    def __init__(self, channels, hidden, layers, horizon):
        super().__init__()
        self.horizon, self.channels = horizon, channels
        self.lstm = torch.nn.LSTM(channels, hidden, layers, batch_first=True)
        self.head = torch.nn.Linear(hidden, horizon * channels)

    def forward(self, x, state):
        out, state = self.lstm(x, state)
        return self.head(out[:, -1]).view(self.horizon, self.channels), state


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-messages", type=int, default=0)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (0: torch's default, one per core)")
    a = ap.parse_args()
    if a.threads > 0:
        # One thread is the peer's fastest setting on a small shared box:
        # batch-1 calls are too small to split, and OpenMP's spinning
        # workers lose badly to preemption.
        torch.set_num_threads(a.threads)

    torch.manual_seed(7)
    model = Forecaster(a.channels, a.hidden, a.layers, a.horizon).eval()
    consumer = Consumer({
        "bootstrap.servers": a.brokers,
        "group.id": a.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
    })
    consumer.subscribe([a.topic])

    windows = {}   # device -> deque of rows (the sliding window)
    pending = {}   # device -> rows of the batch being filled
    states = {}    # device -> (h, c)
    forecasts = {}  # device -> forecast of the next batch
    scores = {}    # device -> (mse, shares)
    n = scored = 0
    start = last_msg = None
    with torch.no_grad():
        while True:
            msg = consumer.poll(0.5)
            now = time.perf_counter()
            if msg is None:
                if last_msg is not None and now - last_msg > 5:
                    break
                continue
            if msg.error():
                continue
            if start is None:
                start = now
            last_msg = now
            r = json.loads(msg.value())
            dev, values = r["device"], r["values"]
            windows.setdefault(dev, collections.deque(maxlen=a.window)).append(values)
            rows = pending.setdefault(dev, [])
            rows.append(values)
            n += 1
            if len(rows) == a.horizon:
                x = torch.tensor(rows, dtype=torch.float32)
                if dev in forecasts:
                    err = (x - forecasts[dev]) ** 2
                    per_channel = err.sum(dim=0)
                    total = per_channel.sum()
                    scores[dev] = (err.mean().item(), (per_channel / total).tolist())
                    scored += 1
                forecasts[dev], states[dev] = model(x.unsqueeze(0), states.get(dev))
                pending[dev] = []
            if now - start >= a.seconds or (a.max_messages and n >= a.max_messages):
                break
    elapsed = (last_msg or 0) - (start or 0)
    consumer.close()
    rate = n / elapsed if elapsed > 0 else 0.0
    print(f"peer: {n} readings, {scored} batches scored, {len(windows)} devices in {elapsed:.1f} s "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)", file=sys.stderr)
    print(f"peer_readings_per_s={rate:.0f}")


if __name__ == "__main__":
    main()
