"""Spatial sampling and detection: GridSample, AffineGrid (spatial transformer networks), Col2Im, DeformConv,
RoiAlign and NonMaxSuppression.

Sampling is vectorised over every output point: each interpolation corner (2 per axis for linear, 4 for cubic)
is one gather from the flattened input, weighted and summed, with the padding mode applied to the indices.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .registry import NodeSpec, Op, register
from .shape import finite_attr, int_attr


def _acc(x: np.ndarray):
    return np.float64 if x.dtype == np.float64 else np.float32


def _reflect(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Reflect coordinates at the borders until they fall inside [low, high]."""
    span = high - low
    if span <= 0:
        return np.full_like(x, low)
    out = x.copy()
    below = x < low
    above = x > high
    for mask, start, sign in ((below, low, 1), (above, high, -1)):
        if not mask.any():
            continue
        distance = (low - x[mask]) if sign == 1 else (x[mask] - high)
        flips = np.floor(distance / span)
        rest = distance - flips * span
        even = flips % 2 == 0
        out[mask] = np.where(even, start + sign * rest, (high if sign == 1 else low) - sign * rest)
    return out


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> list[np.ndarray]:
    t = np.abs(t)
    return [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]


_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest", "bicubic": "cubic", "cubic": "cubic"}


@register("GridSample", 16)
class GridSample(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        mode = self.attr("mode", "bilinear" if node.opset < 20 else "linear")
        if mode not in _MODES:
            raise self.fail(f"mode must be linear, nearest or cubic, got '{mode}'")
        self.mode = _MODES[mode]
        self.padding = self.attr("padding_mode", "zeros")
        if self.padding not in ("zeros", "border", "reflection"):
            raise self.fail(f"padding_mode must be zeros, border or reflection, got '{self.padding}'")
        self.align = bool(int_attr(self, "align_corners", 0))

    def run(self, x, grid):
        dims = x.ndim - 2
        if dims < 1 or grid.ndim != x.ndim or grid.shape[0] != x.shape[0] or grid.shape[-1] != dims:
            raise self.fail(f"grid {list(grid.shape)} must be (N, ..., {dims}) for input {list(x.shape)}")
        if self.node.opset < 20 and dims != 2:
            raise self.fail(f"opset {self.node.opset} GridSample takes 4-D input, got {list(x.shape)}")
        n, c = x.shape[:2]
        sizes = x.shape[2:]
        out_spatial = grid.shape[1:-1]
        points = int(np.prod(out_spatial))
        corners = {"nearest": 1, "linear": 2, "cubic": 4}[self.mode] ** dims
        self.check_size((n, c) + tuple(out_spatial), x.dtype)
        self.check_work(float(n) * c * points * corners)
        acc = _acc(x)
        g = grid.reshape(n, points, dims).astype(np.float64)
        coords = []
        for i, size in enumerate(sizes):  # grid's last axis lists x (the last spatial axis) first
            v = g[:, :, dims - 1 - i]
            v = (v + 1) / 2 * (size - 1) if self.align else ((v + 1) * size - 1) / 2
            if self.mode == "nearest":
                v = np.rint(v)
            low, high = (0.0, size - 1.0) if self.align else (-0.5, size - 0.5)
            if self.padding == "border":  # only coordinates beyond the border move (not those within half a pixel)
                v = np.where((v < low) | (v > high), np.clip(v, 0, size - 1), v)
            elif self.padding == "reflection":
                v = _reflect(v, low, high)
            coords.append(v)
        flat = x.reshape(n, c, -1).astype(acc, copy=False)
        strides = [int(np.prod(sizes[i + 1:])) for i in range(dims)]
        per_axis = []  # for each axis: list of (index, weight)
        for v in coords:
            if self.mode == "nearest":
                per_axis.append([(v.astype(np.int64), None)])
                continue
            base = np.floor(v)
            t = v - base
            base = base.astype(np.int64)
            if self.mode == "linear":
                per_axis.append([(base, 1 - t), (base + 1, t)])
            else:
                weights = _cubic_weights(t)
                per_axis.append([(base + k - 1, weights[k]) for k in range(4)])
        out = np.zeros((n, c, points), acc)
        for combo in itertools.product(*per_axis):
            flat_index = np.zeros((n, points), np.int64)
            weight = np.ones((n, points), np.float64)
            valid = np.ones((n, points), bool)
            for i, (index, w) in enumerate(combo):
                size = sizes[i]
                if self.padding == "zeros":
                    valid &= (index >= 0) & (index < size)
                    index = np.clip(index, 0, size - 1)
                elif self.padding == "border":
                    index = np.clip(index, 0, size - 1)
                else:
                    low, high = (0.0, size - 1.0) if self.align else (-0.5, size - 0.5)
                    index = np.clip(_reflect(index.astype(np.float64), low, high).astype(np.int64), 0, size - 1)
                flat_index += index * strides[i]
                if w is not None:
                    weight = weight * w
            weight = np.where(valid, weight, 0).astype(acc)
            gathered = np.take_along_axis(flat, np.broadcast_to(flat_index[:, None, :], (n, c, points)), axis=2)
            out += gathered * weight[:, None, :]
        return out.reshape((n, c) + tuple(out_spatial)).astype(x.dtype, copy=False)


@register("AffineGrid", 20)
class AffineGrid(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.align = bool(int_attr(self, "align_corners", 0))

    def run(self, theta, size):
        size = [int(s) for s in np.asarray(size).reshape(-1)]
        dims = len(size) - 2
        if dims not in (2, 3) or theta.shape != (size[0], dims, dims + 1):
            raise self.fail(f"theta {list(theta.shape)} and size {size} must describe a 2-D or 3-D affine grid")
        if any(s <= 0 for s in size[2:]):
            raise self.fail(f"size {size} must be positive")
        spatial = size[2:]
        self.check_size([size[0]] + spatial + [dims], theta.dtype)
        acc = _acc(theta)
        axes = []
        for s in spatial:
            if self.align:
                axes.append(np.linspace(-1, 1, s) if s > 1 else np.zeros(1))
            else:
                axes.append((2 * np.arange(s) + 1) / s - 1)
        mesh = np.meshgrid(*axes, indexing="ij")  # per spatial axis, in (D,) H, W order
        base = np.stack([m.reshape(-1) for m in mesh[::-1]] + [np.ones(mesh[0].size)], axis=-1).astype(acc)
        out = base @ np.swapaxes(theta.astype(acc), 1, 2)  # (N, points, dims)
        return out.reshape([size[0]] + spatial + [dims]).astype(theta.dtype, copy=False)


def _window_attrs(op: Op, dims: int, kernel=None):
    dilations = [int(v) for v in op.attr("dilations", [1] * dims)]
    strides = [int(v) for v in op.attr("strides", [1] * dims)]
    pads = [int(v) for v in op.attr("pads", [0] * 2 * dims)]
    if len(dilations) != dims or len(strides) != dims or len(pads) != 2 * dims:
        raise op.fail(f"dilations {dilations}, strides {strides}, pads {pads} must fit {dims} spatial axes")
    if any(v <= 0 for v in dilations + strides) or any(p < 0 for p in pads):
        raise op.fail("dilations and strides must be positive and pads non-negative")
    if any(p > op.node.limits.max_pad for p in pads):
        raise op.fail(f"pads {pads} exceed the limit of {op.node.limits.max_pad} (nn_core.Limits.max_pad)")
    return dilations, strides, pads


@register("Col2Im", 18)
class Col2Im(Op):
    def run(self, x, image_shape, block_shape):
        image = [int(v) for v in np.asarray(image_shape).reshape(-1)]
        block = [int(v) for v in np.asarray(block_shape).reshape(-1)]
        dims = len(image)
        if len(block) != dims or any(v <= 0 for v in image + block):
            raise self.fail(f"image_shape {image} and block_shape {block} must be positive, of one length")
        dilations, strides, pads = _window_attrs(self, dims)
        kernel = int(np.prod(block))
        if x.ndim != 3 or x.shape[1] % kernel:
            raise self.fail(f"input {list(x.shape)} must be (N, C*{kernel}, L)")
        counts = [(image[i] + pads[i] + pads[dims + i] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1
                  for i in range(dims)]
        if any(v <= 0 for v in counts) or int(np.prod(counts)) != x.shape[2]:
            raise self.fail(f"{x.shape[2]} blocks do not tile an image of {image} with blocks {block}")
        n, channels = x.shape[0], x.shape[1] // kernel
        padded = [image[i] + pads[i] + pads[dims + i] for i in range(dims)]
        self.check_size([n, channels] + padded, x.dtype)
        out = np.zeros([n, channels] + padded, x.dtype)
        cols = x.reshape([n, channels] + block + counts)
        for offset in itertools.product(*(range(b) for b in block)):
            starts = [offset[i] * dilations[i] for i in range(dims)]
            target = tuple(slice(starts[i], starts[i] + strides[i] * (counts[i] - 1) + 1, strides[i])
                           for i in range(dims))
            out[(slice(None), slice(None)) + target] += cols[(slice(None), slice(None)) + offset]
        crop = tuple(slice(pads[i], pads[i] + image[i]) for i in range(dims))
        return np.ascontiguousarray(out[(slice(None), slice(None)) + crop])


def _bilinear_zero(data: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample data (N, C, H, W) at float points ys, xs (N, P) with zeros outside: (N, C, P)."""
    n, c, h, w = data.shape
    y0, x0 = np.floor(ys), np.floor(xs)
    ty, tx = ys - y0, xs - x0
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    flat = data.reshape(n, c, h * w)
    out = np.zeros((n, c, ys.shape[1]), data.dtype)
    for dy, wy in ((0, 1 - ty), (1, ty)):
        for dx, wx in ((0, 1 - tx), (1, tx)):
            yy, xx = y0 + dy, x0 + dx
            valid = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            index = np.clip(yy, 0, h - 1) * w + np.clip(xx, 0, w - 1)
            weight = np.where(valid, wy * wx, 0).astype(data.dtype)
            out += np.take_along_axis(flat, np.broadcast_to(index[:, None, :], (n, c, index.shape[1])), axis=2) \
                * weight[:, None, :]
    return out


@register("DeformConv", 19)
class DeformConv(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.group = int_attr(self, "group", 1)
        self.offset_group = int_attr(self, "offset_group", 1)
        if self.group <= 0 or self.offset_group <= 0:
            raise self.fail("group and offset_group must be positive")

    def run(self, x, w, offset, b=None, mask=None):
        if x.ndim != 4 or w.ndim != 4:
            raise self.fail(f"DeformConv takes 2-D images: X {list(x.shape)}, W {list(w.shape)}")
        n, c, h, wid = x.shape
        out_c, c_per_group, kh, kw = w.shape
        kernel = self.attr("kernel_shape")
        if kernel is not None and list(kernel) != [kh, kw]:
            raise self.fail(f"kernel_shape {kernel} does not match W {list(w.shape)}")
        dilations, strides, pads = _window_attrs(self, 2)
        g, og = self.group, self.offset_group
        if c != c_per_group * g or out_c % g or c % og:
            raise self.fail(f"channels of X {c}, W {list(w.shape)}, group {g}, offset_group {og} do not fit")
        oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
        ow = (wid + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
        k = kh * kw
        if oh <= 0 or ow <= 0 or offset.shape != (n, og * 2 * k, oh, ow):
            raise self.fail(f"offset {list(offset.shape)} must be {[n, og * 2 * k, oh, ow]}")
        if mask is not None and mask.shape != (n, og * k, oh, ow):
            raise self.fail(f"mask {list(mask.shape)} must be {[n, og * k, oh, ow]}")
        self.check_size((n, c, k, oh * ow), x.dtype, "the sampled columns")
        self.check_work(float(n) * out_c * c_per_group * k * oh * ow + float(n) * c * k * oh * ow * 4)
        acc = _acc(x)
        data = x.astype(acc, copy=False)
        base_y = (np.arange(oh) * strides[0] - pads[0])[:, None]
        base_x = (np.arange(ow) * strides[1] - pads[1])[None, :]
        offs = offset.astype(acc).reshape(n, og, k, 2, oh * ow)
        cols = np.zeros((n, c, k, oh * ow), acc)
        per_og = c // og
        for gi in range(og):
            part = data[:, gi * per_og:(gi + 1) * per_og]
            for ki in range(k):
                i, j = divmod(ki, kw)
                ys = (base_y + i * dilations[0]).astype(acc) + offs[:, gi, ki, 0].reshape(n, oh, ow)
                xs = (base_x + j * dilations[1]).astype(acc) + offs[:, gi, ki, 1].reshape(n, oh, ow)
                sampled = _bilinear_zero(part, ys.reshape(n, -1), xs.reshape(n, -1))
                if mask is not None:
                    sampled = sampled * mask[:, gi * k + ki].reshape(n, 1, -1).astype(acc)
                cols[:, gi * per_og:(gi + 1) * per_og, ki] = sampled
        out_per_group = out_c // g
        weights = w.astype(acc).reshape(g, out_per_group, c_per_group * k)
        cols = cols.reshape(n, g, c_per_group * k, oh * ow)
        out = np.einsum("gok,ngkp->ngop", weights, cols).reshape(n, out_c, oh, ow)
        if b is not None:
            out = out + b.astype(acc).reshape(1, -1, 1, 1)
        return out.astype(x.dtype, copy=False)


@register("RoiAlign", 10)
class RoiAlign(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.mode = self.attr("mode", "avg")
        if self.mode not in ("avg", "max"):
            raise self.fail(f"mode must be avg or max, got '{self.mode}'")
        self.out_h = int_attr(self, "output_height", 1)
        self.out_w = int_attr(self, "output_width", 1)
        self.ratio = int_attr(self, "sampling_ratio", 0)
        self.scale = finite_attr(self, "spatial_scale", 1.0)
        transform = self.attr("coordinate_transformation_mode", "half_pixel" if node.opset >= 16 else
                              "output_half_pixel")
        if transform not in ("half_pixel", "output_half_pixel"):
            raise self.fail(f"coordinate_transformation_mode must be half_pixel or output_half_pixel, got "
                            f"'{transform}'")
        self.half_pixel = transform == "half_pixel"
        if self.out_h <= 0 or self.out_w <= 0 or self.ratio < 0:
            raise self.fail("output sizes must be positive and sampling_ratio non-negative")

    def run(self, x, rois, batch_indices):
        if x.ndim != 4 or rois.ndim != 2 or rois.shape[1] != 4:
            raise self.fail(f"X {list(x.shape)} must be 4-D and rois {list(rois.shape)} (R, 4)")
        count = rois.shape[0]
        batch = np.asarray(batch_indices).astype(np.int64).reshape(-1)
        if batch.shape != (count,) or (count and (batch.min() < 0 or batch.max() >= x.shape[0])):
            raise self.fail(f"batch_indices must give one image index in 0..{x.shape[0] - 1} per roi")
        n, c, h, w = x.shape
        ph, pw = self.out_h, self.out_w
        self.check_size((count, c, ph, pw), x.dtype)
        acc = _acc(x)
        offset = 0.5 if self.half_pixel else 0.0
        out = np.zeros((count, c, ph, pw), acc)
        data = x.astype(acc, copy=False)
        for r in range(count):
            x1, y1, x2, y2 = (float(v) * self.scale - offset for v in rois[r])
            roi_w, roi_h = x2 - x1, y2 - y1
            if not self.half_pixel:
                roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
            bin_h, bin_w = roi_h / ph, roi_w / pw
            grid_h = self.ratio or int(math.ceil(roi_h / ph))
            grid_w = self.ratio or int(math.ceil(roi_w / pw))
            grid_h, grid_w = max(grid_h, 0), max(grid_w, 0)
            self.check_work(float(c) * ph * pw * grid_h * grid_w * 4)
            samples = max(grid_h * grid_w, 1)
            ys = y1 + np.arange(ph)[:, None] * bin_h + (np.arange(grid_h)[None, :] + 0.5) * bin_h / max(grid_h, 1)
            xs = x1 + np.arange(pw)[:, None] * bin_w + (np.arange(grid_w)[None, :] + 0.5) * bin_w / max(grid_w, 1)
            ys, xs = ys.reshape(-1), xs.reshape(-1)  # (ph*gh,), (pw*gw,)
            wy, iy = self._axis_weights(ys, h)
            wx, ix = self._axis_weights(xs, w)
            image = data[batch[r]]  # (C, H, W)
            # values at every (y sample, x sample) for the 4 corners: (C, Y, X) each
            terms = [image[:, iy[a]][:, :, ix[b]] * (wy[a][:, None] * wx[b][None, :]).astype(acc)
                     for a in (0, 1) for b in (0, 1)]
            shape = (c, ph, grid_h, pw, grid_w)
            if self.mode == "avg":
                total = sum(terms).reshape(shape)
                out[r] = total.sum(axis=(2, 4)) / samples
            else:
                best = np.maximum.reduce(terms).reshape(shape)
                out[r] = best.max(axis=(2, 4)) if grid_h and grid_w else 0
        return out.astype(x.dtype, copy=False)

    @staticmethod
    def _axis_weights(v: np.ndarray, size: int):
        """(low weight, high weight), (low index, high index) for samples v along an axis of ``size``."""
        outside = (v < -1.0) | (v > size)
        v = np.maximum(v, 0.0)
        low = np.floor(v).astype(np.int64)
        at_end = low >= size - 1
        low = np.where(at_end, size - 1, low)
        high = np.where(at_end, size - 1, low + 1)
        v = np.where(at_end, low, v)
        frac = v - low
        w_low, w_high = np.where(outside, 0, 1 - frac), np.where(outside, 0, frac)
        return (w_low, w_high), (low, high)


@register("NonMaxSuppression", 10)
class NonMaxSuppression(Op):
    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.center = bool(int_attr(self, "center_point_box", 0))

    def run(self, boxes, scores, max_per_class=None, iou_threshold=None, score_threshold=None):
        if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or scores.shape[0] != boxes.shape[0] \
                or scores.shape[2] != boxes.shape[1]:
            raise self.fail(f"boxes {list(boxes.shape)} must be (B, N, 4) and scores {list(scores.shape)} (B, C, N)")
        limit = 0 if max_per_class is None or np.size(max_per_class) == 0 else \
            int(np.asarray(max_per_class).reshape(-1)[0])
        iou_max = 0.0 if iou_threshold is None or np.size(iou_threshold) == 0 else \
            float(np.asarray(iou_threshold).reshape(-1)[0])
        floor = None if score_threshold is None or np.size(score_threshold) == 0 else \
            float(np.asarray(score_threshold).reshape(-1)[0])
        if not 0 <= iou_max <= 1:
            raise self.fail(f"iou_threshold must be within [0, 1], got {iou_max}")
        batches, classes, count = scores.shape
        limit = min(max(limit, 0), count)
        self.check_work(float(batches) * classes * count * max(limit, 1))
        b = boxes.astype(np.float64)
        if self.center:
            x1, y1 = b[..., 0] - b[..., 2] / 2, b[..., 1] - b[..., 3] / 2
            x2, y2 = b[..., 0] + b[..., 2] / 2, b[..., 1] + b[..., 3] / 2
        else:
            y1, x1, y2, x2 = (np.minimum(b[..., 0], b[..., 2]), np.minimum(b[..., 1], b[..., 3]),
                              np.maximum(b[..., 0], b[..., 2]), np.maximum(b[..., 1], b[..., 3]))
        areas = (x2 - x1) * (y2 - y1)
        selected: list[tuple[int, int, int]] = []
        if limit == 0:
            return np.zeros((0, 3), np.int64)
        for bi in range(batches):
            for ci in range(classes):
                s = scores[bi, ci].astype(np.float64)
                order = np.argsort(-s, kind="stable")
                if floor is not None:
                    order = order[s[order] > floor]
                kept: list[int] = []
                for index in order:
                    if kept:
                        k = np.asarray(kept)
                        ix1 = np.maximum(x1[bi, index], x1[bi, k])
                        iy1 = np.maximum(y1[bi, index], y1[bi, k])
                        ix2 = np.minimum(x2[bi, index], x2[bi, k])
                        iy2 = np.minimum(y2[bi, index], y2[bi, k])
                        inter = np.maximum(ix2 - ix1, 0) * np.maximum(iy2 - iy1, 0)
                        union = areas[bi, index] + areas[bi, k] - inter
                        with np.errstate(invalid="ignore", divide="ignore"):
                            iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
                        if (iou > iou_max).any():
                            continue
                    kept.append(int(index))
                    if len(kept) >= limit:
                        break
                selected.extend((bi, ci, k) for k in kept)
        return np.asarray(selected, np.int64).reshape(-1, 3)
