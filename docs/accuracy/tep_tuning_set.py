"""TEP tuning set from the training files only (never the *_te.dat test runs).

Writes OUT/train.csv (d00.dat samples 0-349, the model's training data) and
OUT/normal_tail.csv (d00.dat samples 350-499, unseen normal data for false
alarms), with a time column (3-minute samples) and an all-zero label column.
The fault side of the tuning set is the dNN.dat training runs themselves
(labelled by name, every row with the fault number). Usage: python3 tep_tuning_set.py TEP_DIR OUT_DIR
"""
import os
import sys

tep, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
rows = [list(map(float, l.split())) for l in open(os.path.join(tep, "d00.dat")) if l.strip()]
d00 = [list(r) for r in zip(*rows)]  # stored transposed: 52 x 500 -> 500 x 52
names = [f"xmeas_{i}" for i in range(1, 42)] + [f"xmv_{i}" for i in range(1, 12)]


def write(path, part, first):
    with open(path, "w") as f:
        f.write(",".join(["time"] + names + ["label"]) + "\n")
        for i, r in enumerate(part):
            f.write(f"{(first + i) * 180}," + ",".join(f"{v:.6g}" for v in r) + ",0\n")


write(os.path.join(out, "train.csv"), d00[:350], 0)
write(os.path.join(out, "normal_tail.csv"), d00[350:], 350)
