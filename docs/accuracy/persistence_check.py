"""Diagnostic for issue 3 (false alarms on the simulator set): is the normal
data after the training prefix a new *dynamic* the model never saw, or only
new *levels*? Scores each 5-row batch of every file with a naive persistence
forecast (every row of a batch = the last row before it), standardised and
whitened with the statistics of rows 0-279 (the training part of
--train-rows 400 at validation_fraction 0.3), exactly like the Gaussian
score. Prints, per file, the largest validation score (rows 280-399) and the
distribution of scores after row 400, with the share above 1.5 x the
validation maximum (what the Gaussian threshold's margin allows).
Usage: python3 persistence_check.py DIR  (the label_sim.py layout, ';')
"""
import csv
import glob
import statistics as st
import sys

H, TRAIN, VAL_END = 5, 280, 400
for path in sorted(glob.glob(sys.argv[1] + "/*.csv")):
    rows = list(csv.reader(open(path), delimiter=";"))
    x = [[float(v) for v in r[1:-1]] for r in rows[1:]]
    lab = [r[-1] for r in rows[1:]]
    c = len(x[0])
    mu = [st.mean(r[j] for r in x[:TRAIN]) for j in range(c)]
    sd = [st.pstdev([r[j] for r in x[:TRAIN]]) for j in range(c)]
    z = [[(r[j] - mu[j]) / sd[j] for j in range(c)] for r in x]
    batches = range(1, len(z) // H)
    err = {b: [[z[b * H + i][j] - z[b * H - 1][j] for j in range(c)] for i in range(H)] for b in batches}
    train = [row for b in batches if 10 <= b < TRAIN // H for row in err[b]]
    m = [st.mean(r[j] for r in train) for j in range(c)]
    v = [st.pvariance([r[j] for r in train]) for j in range(c)]
    score = {b: sum((row[j] - m[j]) ** 2 / v[j] for row in err[b] for j in range(c)) / (H * c) for b in batches}
    val = max(score[b] for b in batches if TRAIN // H <= b < VAL_END // H)
    later = sorted(score[b] for b in batches if b >= VAL_END // H and all(lab[b * H + i] == "0" for i in range(H)))
    print(f"{path.split('/')[-1]}: validation max {val:.2f}; later normal median {later[len(later) // 2]:.2f} "
          f"q90 {later[int(0.9 * len(later))]:.2f} max {later[-1]:.2f}; above 1.5 x validation max "
          f"{100 * sum(s > 1.5 * val for s in later) / len(later):.1f} %")
