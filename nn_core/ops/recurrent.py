"""Recurrent layers: RNN, GRU and LSTM (every direction, sequence lengths, layouts, peepholes, clip).

The input projection of all time steps is one matrix product done up front; each step then costs one product of
the hidden state with the recurrence weights. Sequences shorter than the batch's longest (``sequence_lens``)
keep their last state and output zeros past their end; the reverse direction reads each sequence backwards
from its own last valid step.
"""

from __future__ import annotations

import numpy as np

from .registry import NodeSpec, Op, register
from .shape import finite_attr, int_attr


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _activation(op: Op, name: str, alpha: float | None, beta: float | None):
    key = name.lower()
    if key == "relu":
        return lambda x: np.maximum(x, 0)
    if key == "tanh":
        return np.tanh
    if key == "sigmoid":
        return _sigmoid
    if key == "affine":
        a, b = (1.0 if alpha is None else alpha), (0.0 if beta is None else beta)
        return lambda x: a * x + b
    if key == "leakyrelu":
        a = 0.01 if alpha is None else alpha
        return lambda x: np.where(x < 0, a * x, x)
    if key == "thresholdedrelu":
        a = 1.0 if alpha is None else alpha
        return lambda x: np.where(x > a, x, 0)
    if key == "scaledtanh":
        a, b = (1.0 if alpha is None else alpha), (1.0 if beta is None else beta)
        return lambda x: a * np.tanh(b * x)
    if key == "hardsigmoid":
        a, b = (0.2 if alpha is None else alpha), (0.5 if beta is None else beta)
        return lambda x: np.clip(a * x + b, 0, 1)
    if key == "elu":
        a = 1.0 if alpha is None else alpha
        return lambda x: np.where(x < 0, a * (np.exp(np.minimum(x, 0)) - 1), x)
    if key == "softsign":
        return lambda x: x / (1 + np.abs(x))
    if key == "softplus":
        return lambda x: np.logaddexp(x, 0)
    raise op.fail(f"unknown activation '{name}'")


_USES_ALPHA = {"affine", "leakyrelu", "thresholdedrelu", "scaledtanh", "hardsigmoid", "elu"}
_USES_BETA = {"affine", "scaledtanh", "hardsigmoid"}


class _Recurrent(Op):
    """What RNN, GRU and LSTM share: attributes, shapes, directions, sequence lengths, layout."""

    gates = 1
    default_activations: tuple[str, ...] = ("Tanh",)

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        direction = self.attr("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            raise self.fail(f"direction must be forward, reverse or bidirectional, got '{direction}'")
        self.directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        self.hidden = int_attr(self, "hidden_size", None)
        if self.hidden is not None and self.hidden <= 0:
            raise self.fail(f"hidden_size must be positive, got {self.hidden}")
        self.layout = int_attr(self, "layout", 0) if node.opset >= 14 else 0
        if self.layout not in (0, 1):
            raise self.fail(f"layout must be 0 or 1, got {self.layout}")
        clip = self.attr("clip")
        self.clip = None if clip is None else finite_attr(self, "clip", 0.0)
        if self.clip is not None and self.clip <= 0:
            raise self.fail(f"clip must be positive, got {self.clip}")
        per_direction = len(self.default_activations)
        names = self.attr("activations") or list(self.default_activations) * len(self.directions)
        if len(names) == per_direction and len(self.directions) == 2:
            names = list(names) * 2
        if len(names) != per_direction * len(self.directions):
            raise self.fail(f"activations {names} must list {per_direction} per direction")
        alphas = list(self.attr("activation_alpha") or [])
        betas = list(self.attr("activation_beta") or [])
        functions = []
        for name in names:
            key = str(name).lower()
            alpha = alphas.pop(0) if key in _USES_ALPHA and alphas else None
            beta = betas.pop(0) if key in _USES_BETA and betas else None
            functions.append(_activation(self, str(name), alpha, beta))
        self.functions = [functions[i * per_direction:(i + 1) * per_direction] for i in range(len(self.directions))]
        w, r = self.const(1), self.const(2)
        if w is not None and r is not None:
            self._check_weights(w, r, None)

    def _check_weights(self, w: np.ndarray, r: np.ndarray, x: np.ndarray | None) -> int:
        dirs, g = len(self.directions), self.gates
        if w.ndim != 3 or r.ndim != 3 or w.shape[0] != dirs or r.shape[0] != dirs:
            raise self.fail(f"W {list(w.shape)} and R {list(r.shape)} must be [{dirs}, {g}*hidden, ...]")
        hidden = r.shape[2]
        if (self.hidden is not None and hidden != self.hidden) or w.shape[1] != g * hidden \
                or r.shape[1] != g * hidden:
            raise self.fail(f"W {list(w.shape)} and R {list(r.shape)} do not match hidden_size "
                            f"{self.hidden if self.hidden is not None else hidden} with {g} gates")
        if x is not None and (x.ndim != 3 or x.shape[2] != w.shape[2]):
            raise self.fail(f"input {list(x.shape)} must be 3-D with {w.shape[2]} features (W {list(w.shape)})")
        return hidden

    def _act(self, f, x):
        if self.clip is not None:
            x = np.clip(x, -self.clip, self.clip)
        return f(x)

    def _state(self, value, index, batch, hidden, dtype, what):
        if value is None:
            return np.zeros((batch, hidden), dtype)
        value = np.asarray(value)
        if self.layout == 1:
            value = np.swapaxes(value, 0, 1)
        if value.shape != (len(self.directions), batch, hidden):
            raise self.fail(f"{what} has shape {list(value.shape)}, expected "
                            f"{[len(self.directions), batch, hidden]} (directions, batch, hidden)")
        return value[index].astype(dtype)

    def run(self, x, w, r, b=None, sequence_lens=None, *states):
        x = np.asarray(x)
        if self.layout == 1 and x.ndim == 3:
            x = np.swapaxes(x, 0, 1)
        hidden = self._check_weights(w, r, x)
        steps, batch, features = x.shape
        dirs = len(self.directions)
        dtype = np.float64 if x.dtype == np.float64 else np.float32
        self.check_size((steps, dirs, batch, hidden), x.dtype, "output Y")
        self.check_work(float(steps) * batch * dirs * self.gates * hidden * (features + hidden))
        if b is not None and np.shape(b) != (dirs, 2 * self.gates * hidden):
            raise self.fail(f"B has shape {list(np.shape(b))}, expected {[dirs, 2 * self.gates * hidden]}")
        if sequence_lens is None:
            lengths = np.full(batch, steps, np.int64)
        else:
            lengths = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
            if lengths.shape != (batch,) or (lengths < 0).any() or (lengths > steps).any():
                raise self.fail(f"sequence_lens {lengths.tolist()} must give one length in 0..{steps} per batch "
                                f"entry ({batch})")
        full = bool((lengths == steps).all())
        time = np.arange(steps)[:, None]
        valid = time < lengths[None, :]  # [steps, batch]
        ys, finals = [], []
        for d, direction in enumerate(self.directions):
            xs = x.astype(dtype, copy=False)
            if direction == "reverse":
                if full:
                    xs = xs[::-1]
                else:  # each sequence backwards from its own last valid step
                    index = np.where(valid, lengths[None, :] - 1 - time, time)
                    xs = np.take_along_axis(xs, index[:, :, None], axis=0)
            bias = None if b is None else np.asarray(b[d], dtype)
            projected = xs.reshape(steps * batch, features) @ np.asarray(w[d], dtype).T
            projected = projected.reshape(steps, batch, -1)
            if bias is not None:
                projected += bias[: self.gates * hidden]
            y, final = self._direction(d, projected, np.asarray(r[d], dtype),
                                       None if bias is None else bias[self.gates * hidden:],
                                       [self._state(s, d, batch, hidden, dtype, what)
                                        for s, what in zip(self._initial(states), self.state_names)],
                                       valid, full, states)
            if direction == "reverse":
                if full:
                    y = y[::-1]
                else:
                    y = np.take_along_axis(y, index[:, :, None], axis=0) * valid[:, :, None]
            ys.append(y)
            finals.append(final)
        y = np.stack(ys, axis=1).astype(x.dtype, copy=False)  # [steps, dirs, batch, hidden]
        outputs = [y] + [np.stack([f[i] for f in finals]).astype(x.dtype, copy=False)
                         for i in range(len(self.state_names))]
        if self.layout == 1:
            outputs = [np.transpose(outputs[0], (2, 0, 1, 3))] + [np.swapaxes(o, 0, 1) for o in outputs[1:]]
        outputs = outputs[: len(self.node.outputs)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    state_names: tuple[str, ...] = ("initial_h",)

    def _initial(self, states):
        return [states[i] if i < len(states) else None for i in range(len(self.state_names))]

    @staticmethod
    def _carry(valid_t, new, old, full):
        return new if full else np.where(valid_t[:, None], new, old)


@register("RNN", 1)
class RNN(_Recurrent):
    gates = 1
    default_activations = ("Tanh",)

    def _direction(self, d, projected, r, rbias, states, valid, full, _):
        (f,) = self.functions[d]
        h = states[0]
        ys = np.zeros(projected.shape[:2] + (r.shape[1],), projected.dtype)
        rt = r.T
        for t in range(projected.shape[0]):
            gate = projected[t] + h @ rt
            if rbias is not None:
                gate += rbias
            new = self._act(f, gate)
            h = self._carry(valid[t], new, h, full)
            ys[t] = new if full else new * valid[t][:, None]
        return ys, (h,)


@register("GRU", 1)
class GRU(_Recurrent):
    gates = 3
    default_activations = ("Sigmoid", "Tanh")

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.linear_before_reset = bool(int_attr(self, "linear_before_reset", 0))

    def _direction(self, d, projected, r, rbias, states, valid, full, _):
        f, g = self.functions[d]
        h = states[0]
        n = r.shape[1]
        rz, rr, rh = r[:n], r[n:2 * n], r[2 * n:]
        rzr = np.concatenate([rz, rr]).T
        rht = rh.T
        bz_r = None if rbias is None else rbias[: 2 * n]
        bh = None if rbias is None else rbias[2 * n:]
        ys = np.zeros(projected.shape[:2] + (n,), projected.dtype)
        for t in range(projected.shape[0]):
            p = projected[t]
            zr = p[:, : 2 * n] + h @ rzr
            if bz_r is not None:
                zr += bz_r
            zr = self._act(f, zr)
            z, reset = zr[:, :n], zr[:, n:]
            if self.linear_before_reset:
                hh = h @ rht
                if bh is not None:
                    hh += bh
                cand = self._act(g, p[:, 2 * n:] + reset * hh)
            else:
                cand = p[:, 2 * n:] + (reset * h) @ rht
                if bh is not None:
                    cand += bh
                cand = self._act(g, cand)
            new = (1 - z) * cand + z * h
            h = self._carry(valid[t], new, h, full)
            ys[t] = new if full else new * valid[t][:, None]
        return ys, (h,)


@register("LSTM", 1)
class LSTM(_Recurrent):
    gates = 4
    default_activations = ("Sigmoid", "Tanh", "Tanh")
    state_names = ("initial_h", "initial_c")

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.input_forget = bool(int_attr(self, "input_forget", 0))

    def _direction(self, d, projected, r, rbias, states, valid, full, extra):
        f, g, hfun = self.functions[d]
        h, c = states
        n = r.shape[1]
        peep = extra[2] if len(extra) > 2 else None
        if peep is not None:
            peep = np.asarray(peep)
            if peep.shape != (len(self.directions), 3 * n):
                raise self.fail(f"P has shape {list(peep.shape)}, expected {[len(self.directions), 3 * n]}")
            pi, po, pf = (peep[d, k * n:(k + 1) * n].astype(projected.dtype) for k in range(3))
        rt = r.T
        ys = np.zeros(projected.shape[:2] + (n,), projected.dtype)
        for t in range(projected.shape[0]):
            gates = projected[t] + h @ rt
            if rbias is not None:
                gates += rbias
            gi, go, gf, gc = gates[:, :n], gates[:, n:2 * n], gates[:, 2 * n:3 * n], gates[:, 3 * n:]
            if peep is not None:
                gi = gi + pi * c
                gf = gf + pf * c
            i = self._act(f, gi)
            forget = 1 - i if self.input_forget else self._act(f, gf)
            new_c = forget * c + i * self._act(g, gc)
            if peep is not None:
                go = go + po * new_c
            new_h = self._act(f, go) * self._act(hfun, new_c)
            h = self._carry(valid[t], new_h, h, full)
            c = self._carry(valid[t], new_c, c, full)
            ys[t] = new_h if full else new_h * valid[t][:, None]
        return ys, (h, c)
