"""The verdict both independent implementations give: each tensor of a `tpri trace` file
against the value computed here, as a relative error."""
import sys

import numpy as np
from safetensors.numpy import load_file

TOL = 1e-10


def compare(out, trace_path):
    """Prints each tensor's relative error and exits 1 when the worst is above TOL."""
    trace = load_file(trace_path)
    worst = 0.0
    for name, want in out.items():
        got = trace[name]
        if name == "v":  # row 0 is unspecified
            got, want = got[1:], want[1:]
        scale = max(np.linalg.norm(want), 1e-300)
        err = np.linalg.norm(got - want) / scale
        print(f"{name:16s} rel err {err:.2e}")
        worst = max(worst, err)
    print(f"worst {worst:.2e}")
    sys.exit(0 if worst <= TOL else 1)
