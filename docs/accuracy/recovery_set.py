"""Recovery after a long fault, from the TEP training files only.

Writes OUT/train.csv (d00.dat samples 0-249), OUT/fault_then_normal.csv
(d00.dat 250-329 normal, 300 samples of the developed fault 1 from d01.dat
100-399, then d00.dat 330-499 normal again) and OUT/normal_only.csv (the
same normal samples without the fault), with a time column (3-minute
samples) and a label column. Usage: python3 recovery_set.py TEP_DIR OUT_DIR
"""
import os
import sys

tep, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)


def load(name):
    rows = [list(map(float, l.split())) for l in open(os.path.join(tep, name)) if l.strip()]
    # d00.dat is stored transposed (52 x 500); the fault runs are not.
    return [list(r) for r in zip(*rows)] if len(rows) == 52 else rows


d00, d01 = load("d00.dat"), load("d01.dat")
names = [f"xmeas_{i}" for i in range(1, 42)] + [f"xmv_{i}" for i in range(1, 12)]


def write(path, parts):
    with open(os.path.join(out, path), "w") as f:
        f.write(",".join(["time"] + names + ["label"]) + "\n")
        i = 0
        for rows, label in parts:
            for r in rows:
                f.write(f"{i * 180}," + ",".join(f"{v:.6g}" for v in r) + f",{label}\n")
                i += 1


write("train.csv", [(d00[:250], 0)])
write("fault_then_normal.csv", [(d00[250:330], 0), (d01[100:400], 1), (d00[330:500], 0)])
write("normal_only.csv", [(d00[250:330], 0), (d00[330:500], 0)])
