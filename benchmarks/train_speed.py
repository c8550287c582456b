"""Training throughput of the LeNet-5 shape, ours (nn_core.fit's step) against torch's eager CPU training, one run.

    python benchmarks/train_speed.py                      # batch 128, one thread, no augmentation
    python benchmarks/train_speed.py --profile            # also: where our step spends its time, per node

Both train the same network (conv 1->12 5x5 pad 2, ReLU, max-pool 2, conv 12->24 5x5, ReLU, max-pool 2, dense
600->120->84->10) with softmax cross-entropy and SGD with Nesterov momentum and weight decay, on the same random
digits, after warm-up steps; the figure is images per second of forward + backward + update. torch is a benchmark
dependency only (``pip install torch``), never the engine's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before NumPy and torch load their thread pools
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import nn_core  # noqa: E402
from nn_core.builder import lenet5  # noqa: E402
from nn_core.optim import SGD  # noqa: E402
from nn_core.plan import call_kernel  # noqa: E402
from nn_core.threads import set_blas_threads  # noqa: E402
from nn_core.train import Trainer  # noqa: E402


def data(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = (rng.random((batch, 1, 28, 28), dtype=np.float32) * (rng.random((batch, 1, 28, 28)) > 0.8))
    return images.astype(np.float32), rng.integers(0, 10, batch)


def ours(batch: int, steps: int, warmup: int) -> tuple[float, Trainer]:
    model = nn_core.load_proto(lenet5(seed=0), "lenet5")
    trainer = Trainer(model, SGD(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4))
    x, y = data(batch)
    for _ in range(warmup):
        trainer.step(x, y)
    started = time.perf_counter()
    for _ in range(steps):
        trainer.step(x, y)
    return batch * steps / (time.perf_counter() - started), trainer


def theirs(batch: int, steps: int, warmup: int, threads: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 12, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(12, 24, 5), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(600, 120), nn.ReLU(), nn.Linear(120, 84),
                        nn.ReLU(), nn.Linear(84, 10))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    images, labels = data(batch)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)

    def step() -> None:
        optimizer.zero_grad()
        loss_fn(net(x), y).backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started)


def profile(trainer: Trainer, batch: int, repeats: int = 20) -> None:
    """Milliseconds per step in each node's forward and backward, and in the loss and the update."""
    plan, x, y = trainer.plan, *data(batch)
    forward: dict[str, float] = {}
    backward: dict[str, float] = {}
    other = {"loss": 0.0, "update": 0.0}
    for _ in range(repeats):
        values = dict(plan.fixed)
        values.update(trainer.params)
        values[trainer.input_name] = x
        for step in plan.steps:
            started = time.perf_counter()
            outs = call_kernel(step, [values[n] if n else None for n in step.inputs], "")
            forward[step.node.name] = forward.get(step.node.name, 0.0) + time.perf_counter() - started
            for name, value in zip(step.outputs, outs):
                if name:
                    values[name] = value
        started = time.perf_counter()
        _, cotangents = trainer.loss(values, y)
        other["loss"] += time.perf_counter() - started
        grads = dict(cotangents)
        for step in reversed(plan.steps):
            out_grads = [grads.get(n) if n else None for n in step.outputs]
            if all(g is None for g in out_grads):
                continue
            started = time.perf_counter()
            in_grads = step.kernel.backward([values[n] if n else None for n in step.inputs],
                                            [values.get(n) if n else None for n in step.outputs], out_grads)
            backward[step.node.name] = backward.get(step.node.name, 0.0) + time.perf_counter() - started
            for name, grad in zip(step.inputs, in_grads):
                if name and grad is not None and name != trainer.input_name:
                    grads[name] = grads[name] + grad if name in grads else grad
        started = time.perf_counter()
        trainer.optimizer.step(trainer.params, {n: grads[n] for n in trainer.trainable if n in grads})
        other["update"] += time.perf_counter() - started
    total = (sum(forward.values()) + sum(backward.values()) + sum(other.values())) / repeats * 1000
    print(f"\nour step, batch {batch}: {total:.1f} ms (profiled; includes the first conv's input gradient, which "
          "GradientPlan.backward also computes today)")
    print(f"{'node':10s} {'op':10s} {'forward ms':>11s} {'backward ms':>12s}")
    for step in plan.steps:
        name = step.node.name
        print(f"{name:10s} {step.node.op_type:10s} {forward.get(name, 0) / repeats * 1000:11.2f} "
              f"{backward.get(name, 0) / repeats * 1000:12.2f}")
    for name, seconds in other.items():
        print(f"{name:21s} {seconds / repeats * 1000:12.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternate ours/torch this many times, keep the best")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    set_blas_threads(args.threads)
    best_ours, best_torch, trainer = 0.0, None, None
    for _ in range(args.rounds):
        rate, trainer = ours(args.batch_size, args.steps, args.warmup)
        best_ours = max(best_ours, rate)
        rate = theirs(args.batch_size, args.steps, args.warmup, args.threads)
        if rate is not None:
            best_torch = max(best_torch or 0.0, rate)
    print(f"LeNet-5 training, batch {args.batch_size}, {args.threads} thread(s), no augmentation, best of "
          f"{args.rounds} x {args.steps} steps")
    print(f"ours (nn_core)   {best_ours:9,.0f} images/s")
    if best_torch is None:
        print("torch            not installed (pip install torch) - no ratio")
    else:
        print(f"torch eager CPU  {best_torch:9,.0f} images/s")
        print(f"ratio ours/torch {best_ours / best_torch:9.2f}x")
    if args.profile and trainer is not None:
        profile(trainer, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
