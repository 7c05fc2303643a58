"""Recovery and held-out extrapolation of the post-training laws on synthetic curves (20 seeds),
and a small CSV of RL points for `scalelab posttrain fit` (docs/posttrain.md).

    PYTHONPATH=. python experiments/posttrain_law_synthetic.py [--csv curves.csv]
"""
import sys

import numpy as np
from scalelab.laws.posttrain import PosttrainPowerLaw, ScaleRLLaw
C = np.logspace(13, 16, 8)
sig = lambda C: 0.1 + 0.62 / (1 + (8e14 / C) ** 1.6)
powf = lambda C: 0.75 - 4 * C ** -0.08
for name, f in (("scalerl curve", sig), ("power curve", powf)):
    rec, ext = [], {"scalerl": [], "posttrain-power": []}
    for seed in range(20):
        y = f(C) + np.random.default_rng(seed).normal(0, 0.004, C.size)
        if name == "scalerl curve":
            p = ScaleRLLaw(R0=0.1, bootstrap=0).fit(C, y).params_
            rec.append((abs(p["A"] - 0.72), abs(p["B"] / 1.6 - 1), abs(np.log(p["C_mid"] / 8e14))))
        else:
            p = PosttrainPowerLaw(bootstrap=0).fit(C, y).params_
            rec.append((abs(p["A"] - 0.75), abs(p["gamma"] / 0.08 - 1), 0))
        for law in (ScaleRLLaw(R0=float(f(np.array([1e-30]))[0]) if name == "scalerl curve" else None, bootstrap=0), PosttrainPowerLaw(bootstrap=0)):
            est = law.fit(C[:-1], y[:-1])
            ext[law.name].append(abs(est.predict(C[-1:])[0] - y[-1]))
    r = np.array(rec)
    print(f"{name}: median |A err| {np.median(r[:,0]):.4f}, median rel err of B/gamma {np.median(r[:,1]):.3f}, median |log C_mid err| {np.median(r[:,2]):.3f}")
    for k, v in ext.items():
        print(f"   held-out largest budget, fit on 7: {k:<16} median |error| {np.median(v):.4f}, max {np.max(v):.4f}")

if "--csv" in sys.argv:  # six RL budgets on the ScaleRL curve with evaluation noise, as a user's table
    import pandas as pd

    y = sig(np.logspace(13, 16, 6)) + np.random.default_rng(5).normal(0, 0.004, 6)
    pd.DataFrame({"technique": "rlvr", "stage_flops": np.logspace(13, 16, 6), "accuracy": y.round(4),
                  "parent_accuracy": 0.1, "parent_id": "d4"}).to_csv(sys.argv[sys.argv.index("--csv") + 1], index=False)
