"""Prints Forewarn alerts (JSON from GET /api/v1/alerts on stdin) as a table."""
import datetime
import json
import sys


def hms(ms):
    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%H:%M:%S")


alerts = json.load(sys.stdin)["alerts"]
print(f"{'device':<12} {'state':<9} {'severity':<9} {'opened':<9} {'resolved':<9} {'peak/thr':>8}  top channels (error share)")
for a in sorted(alerts, key=lambda a: a["opened_at"]):
    top = ", ".join(f"{c['channel']} {c['share']:.0%}" for c in a["contributors"][:3])
    ratio = a["peak_score"] / a["threshold"]
    print(f"{a['device']:<12} {a['state']:<9} {a['severity']:<9} {hms(a['opened_at']):<9} "
          f"{hms(a['resolved_at']):<9} {ratio:>8.1f}  {top}")
print(f"\n{len(alerts)} alert(s)")
