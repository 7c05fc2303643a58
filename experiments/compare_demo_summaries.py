"""Compare two demo summary.json files value for value, leaving out timings, paths and sizes."""
import json, math, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
SKIP = {"wall_s", "cpu_s", "total_wall_s", "total_cpu_s", "paths", "bytes", "line", "cache", "command", "explain", "path"}
diffs, n = [], [0]
def same(x, y):
    return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
def cmp(x, y, path):
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if k in SKIP: continue
            if k not in x or k not in y: diffs.append((path + "/" + k, "only in one")); continue
            cmp(x[k], y[k], path + "/" + k)
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y)): cmp(u, v, f"{path}[{i}]")
    else:
        n[0] += 1
        if isinstance(x, str) and isinstance(y, str):
            x, y = x.replace(sys.argv[1].rsplit("/", 1)[0], "OUT"), y.replace(sys.argv[2].rsplit("/", 1)[0], "OUT")
        if not same(x, y): diffs.append((path, x, y))
cmp(a, b, "")
print(f"{n[0]} values compared, {len(diffs)} differ")
for d in diffs[:20]: print(d)
