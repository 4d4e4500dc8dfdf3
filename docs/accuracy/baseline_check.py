"""Slow-baseline removal, checked offline on the simulator set (ACCURACY.md,
"Also tried"): every channel minus a causal EWMA of itself (time constant
TAU rows), written as a new labelled set to run `forewarn evaluate` on.
With `--freeze-on-labels` the baseline stops updating on labelled rows: an
oracle, the upper bound of freezing it while an alert is open.

    python3 docs/accuracy/baseline_check.py SRC DST TAU [--freeze-on-labels]
"""
import csv
import os
import sys


def main():
    src, dst, tau = sys.argv[1], sys.argv[2], float(sys.argv[3])
    freeze = "--freeze-on-labels" in sys.argv[4:]
    os.makedirs(dst, exist_ok=True)
    alpha = 1.0 / tau
    for name in sorted(os.listdir(src)):
        with open(os.path.join(src, name)) as f:
            rows = list(csv.reader(f, delimiter=";"))
        head, body = rows[0], rows[1:]
        label = head.index("anomaly")
        chans = [i for i, h in enumerate(head) if h not in ("ts", "anomaly")]
        base = None
        out = [head]
        for r in body:
            x = [float(r[i]) for i in chans]
            if base is None:
                base = x[:]
            elif not (freeze and r[label] == "1"):
                base = [b + alpha * (v - b) for b, v in zip(base, x)]
            r2 = list(r)
            for k, i in enumerate(chans):
                r2[i] = "%.6f" % (x[k] - base[k])
            out.append(r2)
        with open(os.path.join(dst, name), "w", newline="") as f:
            csv.writer(f, delimiter=";").writerows(out)


if __name__ == "__main__":
    main()
