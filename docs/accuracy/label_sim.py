"""Adds an `anomaly` label column to `forewarn simulate --csv-dir` output and
switches the separator to ';' (the layout of the plant testbed benchmarks).
The fault windows are those injected by the command in docs/ACCURACY.md.
Usage: python3 label_sim.py RAW_DIR OUT_DIR
"""
import glob
import os
import sys

FAULTS = {  # device: (start s, end s), as in the --fault flags
    "plant-0000": (700, 950), "plant-0001": (650, 950), "plant-0002": (700, 950),
    "plant-0003": (600, 900), "plant-0004": (800, 805), "plant-0005": (750, 950),
    "plant-0006": (600, 1000), "plant-0007": (700, 900),
}
raw, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
for path in sorted(glob.glob(os.path.join(raw, "*.csv"))):
    dev = os.path.basename(path)[:-4]
    start, end = FAULTS[dev]
    lines = [l for l in open(path).read().split("\n") if l]
    res = [lines[0].replace(",", ";") + ";anomaly"]
    t0 = int(lines[1].split(",")[0])
    for l in lines[1:]:
        sec = (int(l.split(",")[0]) - t0) / 1000
        res.append(l.replace(",", ";") + ";" + ("1" if start <= sec < end else "0"))
    open(os.path.join(out, dev + ".csv"), "w").write("\n".join(res) + "\n")
