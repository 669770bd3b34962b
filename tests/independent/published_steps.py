"""Several training steps as the published PyTorch code takes them, in NumPy: the model
with nn.RNN's two biases (each a parameter of its own, each given the gradient of their
sum), one iteration's gradients from spec_numpy.py, and torch.optim's update rules
(SGD; SGD with Nesterov momentum, no dampening; Adam) applied to every tensor, with their
state carried from step to step — to check that `tpri` takes the same steps, not only the
same gradients.

Usage: published_steps.py PARAMS TRAJECTORY LOSS METHOD TARGET_MODE LR_TARGET REG TP_GRAD
                          OPTIMIZER LR MOMENTUM BATCH...
TRAJECTORY holds tpri's parameters after each step k = 1..K as `step<k>.<name>` and its
optimizer slots after the last as `opt.m.<name>` and `opt.v.<name>` (one BATCH per step).
Prints each tensor's relative error and exits 1 above 1e-10.
"""
import sys

import numpy as np
from safetensors.numpy import load_file

from compare import compare
from spec_numpy import trace

BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


class Optimizer:
    """torch.optim.SGD (with or without nesterov=True) and torch.optim.Adam at their
    defaults, one state per tensor name."""

    def __init__(self, kind, lr, momentum):
        self.kind, self.lr, self.mu = kind, lr, momentum
        self.m, self.v, self.t = {}, {}, 0

    def step(self, params, grads):
        self.t += 1
        for name, g in grads.items():
            p = params[name]
            if self.kind == "sgd":
                p -= self.lr * g
            elif self.kind == "nesterov":
                # torch: the buffer starts as a copy of the first gradient.
                buf = g.copy() if name not in self.m else self.mu * self.m[name] + g
                self.m[name] = buf
                p -= self.lr * (g + self.mu * buf)
            else:
                m = BETA1 * self.m.get(name, 0.0) + (1 - BETA1) * g
                v = BETA2 * self.v.get(name, 0.0) + (1 - BETA2) * g * g
                self.m[name], self.v[name] = m, v
                bc1, bc2 = 1 - BETA1 ** self.t, 1 - BETA2 ** self.t
                denom = np.sqrt(v) / np.sqrt(bc2) + ADAM_EPS
                p -= (self.lr / bc1) * m / denom


def main():
    (params_path, trajectory_path, loss, method, mode, lr_target, reg, tp_grad, kind, lr,
     momentum, *batches) = sys.argv[1:]
    P = {k: v.astype(np.float64) for k, v in load_file(params_path).items()}
    assert {"rnn.b_ih", "rnn.b_hh"} <= P.keys(), "nn.RNN has two biases"
    opt = Optimizer(kind, float(lr), float(momentum))
    out = {}
    for k, batch_path in enumerate(batches, start=1):
        t = trace(P, load_file(batch_path), loss, method, mode, float(lr_target), float(reg),
                  tp_grad)
        opt.step(P, {name: t["grad." + name] for name in P})
        out.update({f"step{k}.{name}": value.copy() for name, value in P.items()})
    if kind != "sgd":
        out.update({f"opt.m.{name}": value for name, value in opt.m.items()})
    if kind == "adam":
        out.update({f"opt.v.{name}": value for name, value in opt.v.items()})
    compare(out, trajectory_path)


if __name__ == "__main__":
    main()
