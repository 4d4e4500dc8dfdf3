#!/usr/bin/env python3
"""Compares what the GPU run decided with what the CPU run decided
(benches/gpu.sh). Standard library only: it runs on the lent GPU image and
here alike.

  decisions BASE_DIR OTHER_DIR [--rtol R] [--informational]
      Two `forewarn evaluate --decisions` folders (one CSV per file, a line
      per row: label, train, score, threshold, flagged). The same files and
      rows are required, and, unless --informational: every row's flag
      equal, every score and threshold within the relative tolerance R
      (default 1e-2; see TOLERANCE). Prints a line per file and a last
      summary line; exit status 1 when it does not hold.

  alerts ALERTS_JSON DECISIONS_DIR --start-ms T0 --period-ms P
      Alerts `forewarn serve` raised for replayed TEP runs (the
      /api/v1/alerts pages concatenated into one JSON list), against an
      evaluate run's decisions for the same files: `serve` stamps an alert
      with the last reading of the batch that opened it, evaluate flags the
      batch from its first row, so each device's first alert must open at
      evaluate's first flagged row + horizon - 1 (docs/TEP.md: 4 with
      batches of 5), and a run evaluate never flags must raise none.
"""

import argparse
import csv
import json
import math
import os
import sys

# Why 1e-2 and not tighter: libtorch's CUDA LSTM runs on cuDNN, which by
# default (PyTorch's allow_tf32 for cuDNN) may round f32 GEMM inputs to
# TF32 (10-bit mantissa, ~5e-4); a score is a squared forecast error, so a
# small relative change of the forecast is a larger one of the residual.
# The flags must be equal regardless; the summary gives the largest and the
# 99th-percentile difference actually seen.
TOLERANCE = 1e-2


def read_decisions(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def number(s):
    return float(s) if s != "" else None


def rel_diff(a, b):
    if a == b:
        return 0.0
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale > 0 else 0.0


def percentile(values, q):
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(math.ceil(q * len(s))) - 1)]


def compare_decisions(args):
    base_files = sorted(f for f in os.listdir(args.base) if f.endswith(".csv"))
    other_files = sorted(f for f in os.listdir(args.other) if f.endswith(".csv"))
    problems = []
    if not base_files:
        problems.append(f"no decision files in {args.base}")
    if base_files != other_files:
        problems.append(f"different files: {base_files} vs {other_files}")
    rows = scored = flag_diff = flagged_base = flagged_other = 0
    score_diffs, thr_max = [], 0.0
    for name in base_files:
        if name not in other_files:
            continue
        a = read_decisions(os.path.join(args.base, name))
        b = read_decisions(os.path.join(args.other, name))
        if len(a) != len(b):
            problems.append(f"{name}: {len(a)} rows vs {len(b)}")
            continue
        f_rows = f_scored = f_flags = 0
        f_max = 0.0
        first_flip = None
        for ra, rb in zip(a, b):
            f_rows += 1
            if (ra["row"], ra["label"], ra["train"]) != (rb["row"], rb["label"], rb["train"]):
                problems.append(f"{name}: row {ra['row']} differs in row/label/train")
                break
            sa, sb = number(ra["score"]), number(rb["score"])
            if (sa is None) != (sb is None):
                problems.append(f"{name}: row {ra['row']} scored in one run only")
                continue
            if sa is not None:
                f_scored += 1
                d = rel_diff(sa, sb)
                score_diffs.append(d)
                f_max = max(f_max, d)
                thr_max = max(thr_max, rel_diff(number(ra["threshold"]), number(rb["threshold"])))
            flagged_base += ra["flagged"] == "1"
            flagged_other += rb["flagged"] == "1"
            if ra["flagged"] != rb["flagged"]:
                f_flags += 1
                if first_flip is None:
                    margin = sa / number(ra["threshold"]) - 1 if sa is not None else float("nan")
                    first_flip = f"row {ra['row']} ({ra['flagged']} vs {rb['flagged']}, base score/threshold - 1 = {margin:+.2e})"
        rows += f_rows
        scored += f_scored
        flag_diff += f_flags
        line = f"{name}: {f_rows} rows, {f_scored} scored, flags differ on {f_flags}, score rel. diff max {f_max:.2e}"
        if first_flip:
            line += f"; first: {first_flip}"
        print(line)
    if args.reports:
        for key in ("precision", "recall", "f1", "event_f1", "nab_standard", "mean_detection_delay"):
            va, vb = (json.load(open(r)).get(key) for r in args.reports)
            print(f"metric {key}: {va} vs {vb}")
    smax = max(score_diffs, default=0.0)
    p99 = percentile(score_diffs, 0.99)
    agree = 100.0 * (rows - flag_diff) / rows if rows else 0.0
    detail = (
        f"{len(base_files)} files, {rows} rows ({scored} scored): flags differ on {flag_diff} "
        f"({agree:.2f}% agree; flagged {flagged_base} vs {flagged_other}); score rel. diff "
        f"max {smax:.2e}, p99 {p99:.2e}; threshold rel. diff max {thr_max:.2e} (rtol {args.rtol:g})"
    )
    if args.informational:
        print(f"INFO {detail}" + (f"; {'; '.join(problems)}" if problems else ""))
        return 0
    if flag_diff:
        problems.append(f"flags differ on {flag_diff} rows")
    if smax > args.rtol:
        problems.append(f"score rel. diff {smax:.2e} > {args.rtol:g}")
    if thr_max > args.rtol:
        problems.append(f"threshold rel. diff {thr_max:.2e} > {args.rtol:g}")
    if problems:
        print(f"FAIL {detail}; " + "; ".join(problems))
        return 1
    print(f"PASS {detail}")
    return 0


def compare_alerts(args):
    alerts = json.load(open(args.alerts))
    files = sorted(f for f in os.listdir(args.decisions) if f.endswith(".csv"))
    by_device = {}
    for a in alerts:
        by_device.setdefault(a["device"], []).append(a)
    ok = mismatched = 0
    lines = []
    for name in files:
        stem = name[: -len(".csv")]
        number_ = stem.split("_")[-2][1:] if stem.endswith("_te") else None
        if number_ is None:
            continue
        device = "tep-normal" if number_ == "00" else f"tep-fault-{number_}"
        if device not in args.devices:
            continue
        rows = read_decisions(os.path.join(args.decisions, name))
        flagged = [int(r["row"]) for r in rows if r["flagged"] == "1"]
        want = flagged[0] + args.horizon - 1 if flagged else None
        got_alerts = by_device.get(device, [])
        got = min(
            ((a["opened_at"] - args.start_ms) // args.period_ms for a in got_alerts),
            default=None,
        )
        match = want == got
        ok += match
        mismatched += not match
        lines.append(
            f"{device}: {len(got_alerts)} alert(s), first at row {got if got is not None else '-'}; "
            f"evaluate's first flagged row + {args.horizon - 1}: {want if want is not None else '-'}"
            f"{'' if match else '  MISMATCH'}"
        )
    for line in lines:
        print(line)
    alerted = sum(1 for d in args.devices if d != "tep-normal" and by_device.get(d))
    faults = sum(1 for d in args.devices if d != "tep-normal")
    normal = len(by_device.get("tep-normal", []))
    detail = (
        f"{alerted}/{faults} fault runs alerted, {normal} alert(s) on tep-normal, {len(alerts)} in all; "
        f"first alert = evaluate's first flagged row + {args.horizon - 1} on {ok}/{ok + mismatched} runs"
    )
    if mismatched or not lines:
        print(f"FAIL {detail}")
        return 1
    print(f"PASS {detail}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("decisions")
    d.add_argument("base")
    d.add_argument("other")
    d.add_argument("--rtol", type=float, default=TOLERANCE)
    d.add_argument("--informational", action="store_true")
    d.add_argument("--reports", nargs=2, metavar=("BASE_JSON", "OTHER_JSON"))
    a = sub.add_parser("alerts")
    a.add_argument("alerts")
    a.add_argument("decisions")
    a.add_argument("--start-ms", type=int, required=True)
    a.add_argument("--period-ms", type=int, required=True)
    a.add_argument("--horizon", type=int, default=5)
    a.add_argument("--devices", nargs="+", required=True)
    args = p.parse_args()
    sys.exit(compare_decisions(args) if args.mode == "decisions" else compare_alerts(args))


if __name__ == "__main__":
    main()
