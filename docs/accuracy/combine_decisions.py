"""Combines the row flags of two `forewarn evaluate --decisions` folders
(same data, two configurations) and prints point-wise P / R / F1 / FAR %
over the counted rows for A alone, B alone, A or B, and A and B
(ACCURACY.md, "Also tried": an ensemble of two detectors).

    python3 docs/accuracy/combine_decisions.py DECISIONS_A DECISIONS_B
"""
import csv
import glob
import os
import sys


def load(folder):
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.csv"))):
        with open(path) as f:
            out[os.path.basename(path)] = [r for r in csv.DictReader(f) if r["train"] == "0"]
    return out


def metrics(pairs):
    tp = sum(1 for label, flag in pairs if label and flag)
    fp = sum(1 for label, flag in pairs if not label and flag)
    fn = sum(1 for label, flag in pairs if label and not flag)
    tn = sum(1 for label, flag in pairs if not label and not flag)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    far = 100.0 * fp / (fp + tn) if fp + tn else 0.0
    return f"P {p:.3f} R {r:.3f} F1 {f1:.3f} FAR {far:.1f}"


def main():
    a, b = load(sys.argv[1]), load(sys.argv[2])
    if a.keys() != b.keys():
        sys.exit("the two folders hold different files")
    rules = [
        ("A", lambda x, y: x),
        ("B", lambda x, y: y),
        ("A or B", lambda x, y: x or y),
        ("A and B", lambda x, y: x and y),
    ]
    for name, rule in rules:
        pairs = []
        for f in a:
            if len(a[f]) != len(b[f]):
                sys.exit(f"{f}: the two folders count different rows")
            for ra, rb in zip(a[f], b[f]):
                pairs.append((ra["label"] == "1", rule(ra["flagged"] == "1", rb["flagged"] == "1")))
        print(f"{name:8} {metrics(pairs)}")


if __name__ == "__main__":
    main()
