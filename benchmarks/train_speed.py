"""Training throughput of the LeNet-5 shape, ours (nn_core.fit's step) against torch's eager CPU training, one run.

    python benchmarks/train_speed.py                      # batch 128, one thread, no augmentation
    python benchmarks/train_speed.py --profile            # also: where our step spends its time, per node
    python benchmarks/train_speed.py --node-by-node       # also: our step without the Conv->Relu->MaxPool units

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
from nn_core.threads import set_blas_threads  # noqa: E402
from nn_core.train import Trainer  # noqa: E402


def data(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = (rng.random((batch, 1, 28, 28), dtype=np.float32) * (rng.random((batch, 1, 28, 28)) > 0.8))
    return images.astype(np.float32), rng.integers(0, 10, batch)


def timed(step, batch: int, steps: int) -> tuple[float, float]:
    """Images per second of ``steps`` calls of ``step``: by the wall clock and by the process's CPU time (which
    a busy machine taking the core away does not inflate)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - wall), batch * steps / (time.process_time() - cpu)


def ours(batch: int, steps: int, warmup: int, units: bool = True) -> tuple[tuple[float, float], Trainer]:
    model = nn_core.load_proto(lenet5(seed=0), "lenet5")
    trainer = Trainer(model, SGD(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4))
    if not units:  # every node by its own kernel and rule (no Conv -> Relu -> MaxPool unit), for comparison
        trainer.plan._blocks = {}
        trainer.plan._forward_cache = None
    x, y = data(batch)
    for _ in range(warmup):
        trainer.step(x, y)
    return timed(lambda: trainer.step(x, y), batch, steps), trainer


def theirs(batch: int, steps: int, warmup: int, threads: int) -> tuple[float, float] | None:
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
    return timed(step, batch, steps)


def profile(trainer: Trainer, batch: int, repeats: int = 20) -> None:
    """CPU milliseconds per step in each node's forward and backward, and in the loss and the update: the
    fastest and the median of ``repeats`` steps (this thread's CPU time: a busy machine taking the core away
    mid-node does not count)."""
    clock = time.thread_time
    plan, x, y = trainer.plan, *data(batch)
    times: dict[tuple[str, str], list[float]] = {}

    def record(key: tuple[str, str], started: float) -> None:
        times.setdefault(key, []).append(clock() - started)

    needed = plan._needed(frozenset(trainer.trainable))  # as GradientPlan.backward: only what leads to weights
    for _ in range(repeats):
        values = dict(plan.fixed)
        values.update(trainer.params)
        values[trainer.input_name] = x
        for step, run, inputs, outputs in plan._steps_for(trainer.trainable):  # (as GradientPlan.forward runs)
            started = clock()
            outs = run(*[values[n] if n else None for n in inputs])
            record((step.node.name, "forward"), started)
            for name, value in zip(outputs, outs if isinstance(outs, tuple) else [outs]):
                if name:
                    values[name] = value
        started = clock()
        _, cotangents = trainer.loss(values, y)
        record(("loss", ""), started)
        grads = dict(cotangents)
        for step, accepts_wanted, relu in plan._backward_steps:  # (as GradientPlan.backward walks them)
            out_grads = [grads.get(n) if n else None for n in step.outputs]
            if all(g is None for g in out_grads):
                continue
            inputs = [values[n] if n else None for n in step.inputs]
            wanted = [v is not None and v.dtype.kind == "f" and n in needed for n, v in zip(step.inputs, inputs)]
            if not any(wanted):
                continue
            started = clock()
            block = plan._blocks.get(id(step))
            if block is not None and plan._block_backward(block, step, grads, needed, values):
                record((step.node.name, "backward"), started)  # the Conv -> Relu -> MaxPool block's, in one
                continue
            outputs = [values.get(n) if n else None for n in step.outputs]
            target = step.inputs
            if relu is not None and plan._fuses(relu, step, grads, needed, trainer.trainable, values):
                out_grads = [np.multiply(out_grads[0], outputs[0] > 0)]  # the ReLU runs inside the pool's rule
                target = relu.inputs
            if accepts_wanted:
                in_grads = step.kernel.backward(inputs, outputs, out_grads, wanted=wanted)
            else:
                in_grads = step.kernel.backward(inputs, outputs, out_grads)
            record((step.node.name, "backward"), started)
            for name, want, grad in zip(target, wanted, in_grads):
                if want and grad is not None:
                    grads[name] = grads[name] + grad if name in grads else grad
        started = clock()
        trainer.optimizer.step(trainer.params, {n: grads[n] for n in trainer.trainable if n in grads})
        record(("update", ""), started)

    def ms(key: tuple[str, str], pick) -> float:
        return pick(times[key]) * 1000 if key in times else 0.0

    fastest = sum(ms(key, min) for key in times)
    median = sum(ms(key, np.median) for key in times)
    print(f"\nour step, batch {batch}: {fastest:.1f} ms fastest, {median:.1f} ms median per node summed, over "
          f"{repeats} steps (node by node as GradientPlan runs them)")
    print(f"{'node':10s} {'op':10s} {'forward ms':>16s} {'backward ms':>16s}   (fastest / median)")
    for step in plan.steps:
        name = step.node.name
        cells = [f"{ms((name, way), min):7.2f} /{ms((name, way), np.median):7.2f}" for way in ("forward", "backward")]
        print(f"{name:10s} {step.node.op_type:10s} {cells[0]:>16s} {cells[1]:>16s}")
    for name in ("loss", "update"):
        print(f"{name:21s} {ms((name, ''), min):7.2f} /{ms((name, ''), np.median):7.2f}")
    if any(unit.active is not None for unit, _, _ in plan._blocks.values()):
        print("(a Conv -> Relu -> MaxPool block run as one unit, nn_core/ops/conv_pool_train.py: its forward is on "
              "the Conv's row, its backward, the Conv's dW and dX included, on the MaxPool's)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternate ours/torch this many times, keep the best")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--node-by-node", action="store_true",
                        help="also time our step without the Conv -> Relu -> MaxPool units, alternating")
    args = parser.parse_args()
    set_blas_threads(args.threads)
    best_ours, best_torch, best_plain, trainer = [0.0, 0.0], None, [0.0, 0.0], None
    for _ in range(args.rounds):
        rates, trainer = ours(args.batch_size, args.steps, args.warmup)
        best_ours = [max(a, b) for a, b in zip(best_ours, rates)]
        if args.node_by_node:
            rates, _ = ours(args.batch_size, args.steps, args.warmup, units=False)
            best_plain = [max(a, b) for a, b in zip(best_plain, rates)]
        rates = theirs(args.batch_size, args.steps, args.warmup, args.threads)
        if rates is not None:
            best_torch = [max(a, b) for a, b in zip(best_torch or [0.0, 0.0], rates)]
    print(f"LeNet-5 training, batch {args.batch_size}, {args.threads} thread(s), no augmentation, best of "
          f"{args.rounds} x {args.steps} steps, images/s by wall clock and by CPU time")
    print(f"ours (nn_core)   {best_ours[0]:9,.0f} {best_ours[1]:9,.0f}")
    if args.node_by_node:
        gain = [a / b for a, b in zip(best_ours, best_plain)]
        print(f"ours, no units   {best_plain[0]:9,.0f} {best_plain[1]:9,.0f}   (with them x{gain[0]:.2f} / "
              f"x{gain[1]:.2f} the images per second)")
    if best_torch is None:
        print("torch            not installed (pip install torch) - no ratio")
    else:
        print(f"torch eager CPU  {best_torch[0]:9,.0f} {best_torch[1]:9,.0f}")
        print(f"ratio ours/torch {best_ours[0] / best_torch[0]:9.2f}x {best_ours[1] / best_torch[1]:8.2f}x")
    if args.profile and trainer is not None:
        profile(trainer, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
