"""Sample operands and attributes for checking each gradient rule against finite differences.

``CASES[op]`` is a list of ``(operands, attrs)`` or ``(operands, attrs, options)`` where options
go to ``check_op_grad`` (``const_operands``, ``n_results``, ``rtol``). Operands are float64 (the
check's precision depends on it) unless the op needs integers (indices, conditions). Inputs avoid
kinks (|x| near 0 for relu/abs, ties for max) where a finite difference is not a derivative.
"""

from __future__ import annotations

import numpy as np

_rng = np.random.default_rng(1234)


def A(*shape: int) -> np.ndarray:
    return _rng.standard_normal(shape)


def P(*shape: int) -> np.ndarray:
    """Positive, away from zero."""
    return np.abs(A(*shape)) + 0.5


def U(*shape: int) -> np.ndarray:
    """In (-0.8, 0.8): the domain of asin/acos/atanh."""
    return _rng.uniform(-0.8, 0.8, shape)


UNARY = ["neg", "exp", "tanh", "sigmoid", "relu", "leaky_relu", "elu", "softplus", "erf", "gelu", "abs",
         "sin", "cos", "tan", "sinh", "cosh", "atan", "asinh", "reciprocal", "hard_sigmoid", "hard_swish",
         "identity"]

CASES: dict[str, list[tuple]] = {n: [([A(3, 4)], {})] for n in UNARY}
CASES.update({
    "log": [([P(3, 4)], {})],
    "sqrt": [([P(3, 4)], {})],
    "asin": [([U(3, 4)], {})],
    "acos": [([U(3, 4)], {})],
    "atanh": [([U(3, 4)], {})],
    "acosh": [([P(3, 4) + 1.0], {})],
    "gelu": [([A(3, 4)], {}), ([A(3, 4)], {"approximate": "tanh"})],
    "leaky_relu": [([A(3, 4)], {"alpha": 0.2})],
    "elu": [([A(3, 4)], {"alpha": 0.7})],
    "add": [([A(3, 4), A(4)], {}), ([A(2, 1, 4), A(3, 1)], {})],
    "sub": [([A(3, 4), A(1, 4)], {})],
    "mul": [([A(3, 4), A(3, 1)], {})],
    "div": [([A(3, 4), P(4)], {})],
    "pow": [([P(3, 4), A(4)], {})],
    "max": [([A(3, 4), A(4)], {})],
    "min": [([A(3, 4), A(3, 1)], {})],
    "where": [([A(3, 4) > 0, A(3, 4), A(4)], {})],
    "clip": [([A(3, 4)], {"min": -0.5, "max": 0.5}), ([A(3, 4)], {"min": 0.1})],
    "cast": [([A(3, 4)], {"to": "f32"}, {"rtol": 1e-3, "eps": 1e-3})],
    "matmul": [([A(2, 3, 4), A(4, 5)], {}), ([A(4), A(2, 4, 5)], {}), ([A(3, 4), A(4)], {}),
               ([A(2, 1, 3, 4), A(3, 4, 2)], {})],
    "gemm": [([A(4, 3), A(5, 4), A(5)], {"trans_a": 1, "trans_b": 1, "alpha": 0.5, "beta": 2.0}),
             ([A(3, 4), A(4, 5), A(3, 5)], {"alpha": 0.5}), ([A(3, 4), A(5, 4)], {"trans_b": 1})],
    "reduce_sum": [([A(3, 4, 5)], {"axes": [1], "keepdims": 0}), ([A(3, 4)], {"keepdims": 1})],
    "reduce_mean": [([A(3, 4, 5)], {"axes": [0, 2], "keepdims": 1})],
    "reduce_max": [([A(3, 4, 5)], {"axes": [-1], "keepdims": 0})],
    "reduce_min": [([A(3, 4, 5)], {"axes": [1], "keepdims": 1})],
    "reshape": [([A(3, 4)], {"shape": [2, 6]})],
    "squeeze": [([A(3, 1, 4)], {"axes": [1]})],
    "unsqueeze": [([A(3, 4)], {"axes": [0, 2]})],
    "transpose": [([A(3, 4, 5)], {"perm": [2, 0, 1]}), ([A(3, 4)], {})],
    "expand": [([A(3, 1)], {"shape": [2, 3, 4]})],
    "concat": [([A(3, 4), A(3, 2), A(3, 1)], {"axis": 1})],
    "split": [([A(6, 5)], {"axis": 0, "sizes": [2, 4]}, {"n_results": 2})],
    "slice": [([A(6, 5)], {"starts": [1, -3], "ends": [5, 100], "axes": [0, 1]})],
    "pad": [([A(3, 4)], {"pads": [1, -1, 2, 0]})],
    "batch_norm_train": [([A(4, 3, 2, 2), P(3), A(3), A(3), P(3)], {"momentum": 0.1}),
                         ([A(5, 2), P(2), A(2), A(2), P(2)], {"unbiased": 0})],
})


# -- indexing, scans, misc (ir/grads/indexing.py, misc.py, signal.py, image.py, sequence.py) --
def _I(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.int64)


CASES.update({
    "gather": [([A(5, 3), _I([0, 2], [4, 2])], {"axis": 0}),          # embedding, repeated id
               ([A(3, 4, 2), _I(3, -1, 0, 3)], {"axis": 1}),
               ([A(3, 4), np.array(2, np.int32)], {"axis": -1})],
    "gather_elements": [([A(3, 4), _I([0, 2, 1, 2], [2, 2, 0, 1])], {"axis": 0}),
                        ([A(2, 3), _I([0, 0], [2, -1])], {"axis": 1})],
    "gather_nd": [([A(3, 4, 2), _I([0, 1], [2, 3], [0, 1])], {}),
                  ([A(2, 3, 4), _I([[1], [2]], [[0], [0]])], {"batch_dims": 1})],
    "scatter_elements": [([A(3, 4), _I([0, 2, 1, 2], [2, 1, 0, 1]), A(2, 4)], {"axis": 0}),
                         ([A(3, 4), _I([0, 2, 1, 2], [0, 2, 0, 1]), A(2, 4)], {"axis": 0, "reduction": "add"}),
                         ([A(3, 4), _I([1, 1], [3, 1], [0, 0]), P(3, 2)], {"axis": 1, "reduction": "mul"}),
                         ([A(3, 4), _I([1, 1], [3, 1], [0, 0]), A(3, 2)], {"axis": 1, "reduction": "max"}),
                         ([A(3, 4), _I([1, 1], [3, 1], [0, 0]), A(3, 2)], {"axis": 1, "reduction": "min"})],
    "index_copy": [([A(2, 5, 3), _I(1, 3), A(2, 2, 3)], {"axis": 1}),
                   ([A(4, 3), _I(0), A(1, 3)], {"axis": 0})],
    "scatter_nd": [([A(4, 3), _I([2], [0]), A(2, 3)], {}),
                   ([A(4, 3), _I([2], [0], [2]), A(3, 3)], {"reduction": "add"}),
                   ([A(3, 4), _I([2, 1], [0, 3], [2, 1]), P(3)], {"reduction": "mul"}),
                   ([A(3, 4), _I([2, 1], [0, 3], [2, 1]), A(3)], {"reduction": "max"})],
    "topk": [([A(3, 5)], {"k": 2}), ([A(4, 3)], {"k": 3, "axis": 0, "largest": 0})],
    "max_unpool": [([A(1, 2, 2, 2), _I([[[1, 6], [8, 15]], [[16, 19], [29, 26]]])], {"kernel_shape": [2, 2],
                                                                                     "strides": [2, 2]}),
                   ([A(1, 1, 2, 2), _I([[[0, 3], [12, 10]]])], {"kernel_shape": [2, 2], "strides": [2, 2],
                                                               "output_shape": [1, 1, 5, 3]})],
    "tile": [([A(2, 3)], {"repeats": [2, 1]}), ([A(2, 1, 3)], {"repeats": [1, 3, 2]})],
    "trilu": [([A(4, 5)], {"k": 1}), ([A(2, 3, 3)], {"upper": 0, "k": -1})],
    "cumsum": [([A(3, 4)], {"axis": 1}), ([A(3, 4)], {"axis": 0, "exclusive": 1}),
               ([A(3, 4)], {"axis": -1, "reverse": 1}), ([A(2, 3, 4)], {"axis": 1, "exclusive": 1, "reverse": 1})],
    "cumprod": [([A(3, 4)], {"axis": 1}), ([A(3, 4)], {"axis": 0, "exclusive": 1}),
                ([np.array([[0.5, 0.0, 1.5, -2.0]])], {"axis": 1, "reverse": 1}),
                ([A(2, 3, 4)], {"axis": 1, "exclusive": 1, "reverse": 1})],
    "reduce_prod": [([A(3, 4, 2)], {"axes": [1], "keepdims": 0}), ([A(3, 4, 2)], {"axes": [0, 2], "keepdims": 1}),
                    ([np.array([[0.5, 0.0, 1.5], [2.0, -1.0, 3.0]])], {"keepdims": 0})],
    "dequantize": [([np.array([[-3, 7], [12, 0]], np.int8), np.array(0.25), np.array(2, np.int8)], {}),
                   ([np.array([[-3, 7, 1], [12, 0, -8]], np.int8), P(3), np.array([1, 0, -2], np.int8)], {"axis": 1}),
                   ([np.arange(-10, 10, dtype=np.int8).reshape(4, 5), P(4, 2)], {"axis": 1, "block_size": 3})],
    "det": [([A(3, 3)], {}), ([A(2, 4, 4)], {}), ([A(1, 1)], {}), ([A(2, 2)], {})],
    "fused": [],  # no stand-alone case: the rule refuses (differentiate before fusion); see test_vjp_x86_indexing
})
CASES["slice"] = CASES["slice"] + [  # strided slices
    ([A(7, 5)], {"starts": [1, 4], "ends": [7, -100], "axes": [0, 1], "steps": [2, -2]}),
    ([A(6, 5)], {"starts": [-1], "ends": [-100], "axes": [0], "steps": [-1]}),
    ([A(6, 5)], {"starts": [0, 1], "ends": [6, 4], "axes": [1, 0], "steps": [3, 1]})]
CASES.update({  # image ops (ir/grads/image.py); grids are sampling positions, held constant
    "resize": [([A(1, 2, 3, 4)], {"scales": [1.0, 1.0, 2.0, 2.0]}),
               ([A(1, 2, 4, 4)], {"scales": [1.0, 1.0, 1.5, 0.5], "coordinate_transformation_mode": "asymmetric",
                                  "nearest_mode": "floor"}),
               ([A(1, 1, 5, 4)], {"mode": "linear", "sizes": [1, 1, 3, 2]}),
               ([A(2, 3, 4)], {"mode": "linear", "axes": [1, 2], "scales": [1.7, 2.0],
                               "coordinate_transformation_mode": "align_corners"}),
               ([A(1, 1, 6, 5)], {"mode": "cubic", "antialias": 1, "sizes": [1, 1, 3, 4]}),
               ([A(1, 1, 4, 4)], {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
                                  "roi": [0, 0, 0.4, -0.2, 1, 1, 1.2, 0.8], "sizes": [1, 1, 3, 3],
                                  "extrapolation_value": 5.0})],
    "affine_grid": [([A(2, 2, 3)], {"size": [2, 1, 3, 4]}),
                    ([A(1, 3, 4)], {"size": [1, 1, 2, 3, 2], "align_corners": 1})],
    "col2im": [([A(1, 8, 12)], {"image_shape": [4, 5], "block_shape": [2, 2], "strides": [2, 1],
                                "pads": [1, 0, 1, 1], "dilations": [1, 2]}),
               ([A(2, 4, 4)], {"image_shape": [3, 3], "block_shape": [2, 2]})],
    # the forward rounds sampling positions to f32: a wider step (the result is piecewise bilinear)
    "grid_sample": [([A(1, 2, 3, 4), U(1, 2, 3, 2) * 1.2], {}, {"eps": 1e-3, "rtol": 1e-3}),
                    ([A(2, 1, 3, 4), U(2, 3, 2, 2) * 1.2], {"padding_mode": "border", "align_corners": 1},
                     {"eps": 1e-3, "rtol": 1e-3}),
                    ([A(1, 2, 3, 4), U(1, 2, 3, 2) * 1.2], {"mode": "nearest"}, {"const_operands": (1,)}),
                    ([A(1, 1, 2, 3, 3), U(1, 2, 2, 2, 3) * 1.2], {}, {"eps": 1e-3, "rtol": 1e-3})],
})
CASES.update({  # signal ops (ir/grads/signal.py)
    "dft": [([A(2, 8, 1)], {}), ([A(2, 6, 2)], {"inverse": 1, "axis": 1}), ([A(5, 3, 2)], {"axis": 0}),
            ([A(2, 8, 1)], {"onesided": 1, "dft_length": 10}), ([A(2, 5, 2)], {"inverse": 1, "onesided": 1}),
            ([A(2, 8, 2)], {"dft_length": 5})],
    "stft": [([A(2, 16, 1), P(6)], {"frame_step": 3, "frame_length": 6}),
             ([A(1, 10, 2), np.zeros(0)], {"frame_step": 2, "frame_length": 4, "onesided": 0}),
             ([A(1, 12, 1), P(5)], {"frame_step": 4, "frame_length": 6})],
})
CASES.update({  # sequence ops (ir/grads/sequence.py); the forward's SiLU runs in f32: coarser check
    "causal_conv_with_state": [([A(2, 3, 5), A(3, 1, 4), A(3), A(2, 3, 3)], {}),
                               ([A(1, 2, 6), A(2, 1, 3)], {}),
                               ([A(2, 3, 5), A(3, 1, 4), A(3), A(2, 3, 3)], {"activation": "silu"},
                                {"eps": 1e-3, "rtol": 1e-3, "atol": 1e-5}),
                               ([A(1, 2, 4), A(2, 1, 1), A(2)], {"activation": "swish"},
                                {"eps": 1e-3, "rtol": 1e-3, "atol": 1e-5})],
})
CASES.update({  # bilinear sampling at run-time positions (ir/grads/sampling.py); roi boxes held constant
    "deform_conv": [([A(1, 2, 4, 4), A(2, 2, 2, 2), A(1, 8, 3, 3) * 0.7, A(2), U(1, 4, 3, 3)], {}),
                    ([A(1, 4, 5, 5), A(4, 2, 3, 3), A(1, 36, 3, 3)], {"group": 2, "offset_group": 2,
                                                                      "pads": [1, 1, 1, 1], "strides": [2, 2]})],
    "roi_align": [([A(2, 2, 5, 6), np.array([[0.5, 1.0, 4.2, 3.7], [1.3, 0.2, 5.5, 4.9], [-0.5, 2, 3, 6]]),
                    np.array([0, 1, 1])], {"output_height": 2, "output_width": 3, "sampling_ratio": 2},
                   {"const_operands": (1,)}),
                  ([A(1, 3, 6, 6), np.array([[1.0, 2.0, 9.0, 7.0]]), np.array([0])],
                   {"output_height": 3, "output_width": 2, "sampling_ratio": 1, "spatial_scale": 0.5,
                    "coordinate_transformation_mode": "output_half_pixel"}, {"const_operands": (1,)})],
})


# -- conv, pooling, normalization, attention (ir/grads/conv.py, pool.py, normalization.py, attention.py)
def _D(*shape: int) -> np.ndarray:
    """Distinct values at least 0.1 apart: no ties inside a max-pool window."""
    return _rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 + _rng.uniform(0, 0.01, shape)


_E = np.zeros((0,))  # an absent optional operand in the middle of a schema
_KEEP_ROW = np.tril(np.ones((4, 6), dtype=bool), 2)
_DEAD_ROW = np.ones((4, 6), dtype=bool)
_DEAD_ROW[1] = False  # a query that may attend to nothing
CASES.update({
    "conv": [([A(2, 3, 7, 6), A(4, 3, 3, 2), A(4)], {}),
             ([A(2, 4, 9, 8), A(6, 2, 3, 3)], {"group": 2, "strides": [2, 3], "pads": [1, 0, 2, 1],
                                               "dilations": [1, 2]}),
             ([A(2, 3, 9, 8), A(6, 1, 3, 3), A(6)], {"group": 3, "strides": [2, 2], "pads": [1, 1, 1, 1]}),  # depthwise
             ([A(1, 4, 10), A(4, 1, 3)], {"group": 4, "dilations": [3], "strides": [2]}),
             ([A(2, 2, 5, 5, 4), A(3, 2, 2, 3, 2)], {"strides": [1, 2, 1], "pads": [0, 1, 1, 1, 0, 0]}),
             ([A(2, 3, 7, 7), A(4, 3, 3, 3)], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
             ([A(1, 2, 5, 5), A(2, 2, 2, 2)], {"pads": [3, 0, 0, 3]}),  # pads wider than the kernel
             ([A(2, 3, 6, 6), A(4, 3, 3, 3), A(4)], {"pads": [1, 1, 1, 1]}, {"const_operands": (1,)})],
    "conv_transpose": [([A(2, 3, 4, 5), A(3, 2, 3, 3), A(2)], {}),
                       ([A(2, 4, 4, 5), A(4, 3, 3, 2)], {"group": 2, "strides": [2, 3], "pads": [1, 0, 0, 1],
                                                          "dilations": [2, 1], "output_padding": [1, 2]}),
                       ([A(2, 3, 6), A(3, 1, 3), A(3)], {"group": 3, "strides": [2], "pads": [1, 1]}),
                       ([A(1, 2, 4), A(2, 2, 3)], {"strides": [2], "dilations": [3], "output_padding": [2]})],
    "avg_pool": [([A(2, 3, 6, 7)], {"kernel_shape": [2, 3]}),
                 ([A(2, 3, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
                 ([A(2, 3, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                    "count_include_pad": 1}),
                 ([A(1, 2, 8, 7)], {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1, "pads": [0, 1, 0, 0]}),
                 ([A(1, 2, 8, 7)], {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1, "count_include_pad": 1,
                                    "pads": [1, 1, 0, 0]}),
                 ([A(1, 2, 9)], {"kernel_shape": [3], "strides": [2], "dilations": [2], "auto_pad": "SAME_UPPER"}),
                 ([A(1, 2, 4, 5, 6)], {"kernel_shape": [2, 2, 3], "strides": [2, 1, 3]})],
    "lp_pool": [([P(2, 3, 6, 6)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
                ([P(2, 3, 6, 6) * np.sign(A(2, 3, 6, 6))], {"kernel_shape": [2, 2], "p": 1}),
                ([A(2, 3, 6, 6)], {"kernel_shape": [2, 3], "p": 3, "dilations": [2, 1]})],
    "max_pool": [([_D(2, 3, 6, 7)], {"kernel_shape": [2, 2]}),
                 ([_D(2, 3, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
                 ([_D(2, 3, 7, 7)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "with_indices": 1}),
                 ([_D(2, 3, 7, 8)], {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1, "dilations": [1, 2],
                                     "with_indices": 1, "storage_order": 1}),
                 ([_D(1, 2, 9)], {"kernel_shape": [3], "strides": [2], "auto_pad": "SAME_LOWER"}),
                 ([_D(1, 2, 4, 5, 6)], {"kernel_shape": [2, 2, 3], "strides": [1, 2, 2]})],
    "softmax": [([A(3, 4, 5)], {"axis": 1}), ([A(3, 4)], {})],
    "log_softmax": [([A(3, 4, 5)], {"axis": -1}), ([A(3, 4, 5)], {"axis": 0})],
    "layer_norm": [([A(3, 4, 5), A(5), A(5)], {"stash_type": "f64"}),
                   ([A(2, 3, 4), A(3, 4)], {"axis": 1, "stash_type": "f64", "epsilon": 0.1}),
                   ([A(2, 3, 4), A(1, 4), A(4)], {"axis": -2, "stash_type": "f64"})],
    "rms_norm": [([A(3, 4, 5), A(5)], {"stash_type": "f64"}),
                 ([A(2, 3, 4), A(3, 4)], {"axis": 1, "stash_type": "f64"})],
    "batch_norm": [([A(2, 3, 4, 5), A(3), A(3), A(3), P(3)], {}),
                   ([A(4, 3), A(3), A(3), A(3), P(3)], {"epsilon": 0.01})],
    "group_norm": [([A(2, 6, 4, 3), A(6), A(6)], {"num_groups": 3, "stash_type": "f64"}),
                   ([A(2, 4, 5), A(4), A(4)], {"num_groups": 4, "stash_type": "f64"})],  # instance norm
    "lrn": [([A(2, 5, 3, 4)], {"size": 3, "alpha": 0.5, "beta": 0.75, "bias": 2.0}),
            ([A(2, 6, 7)], {"size": 4, "alpha": 0.3, "beta": 0.6, "bias": 1.5})],
    "dropout": [([A(3, 4)], {"ratio": 0.3, "seed": 1.0}), ([A(3, 4)], {"seed": 2.0}),
                ([A(3, 4), np.array(0.25), np.array(True)], {"seed": 3.0}, {"const_operands": (1,)}),
                ([A(3, 4)], {"ratio": 0.5, "training": 0})],
    "attention": [([A(2, 2, 4, 3), A(2, 2, 5, 3), A(2, 2, 5, 4)], {}),
                  ([A(2, 2, 4, 3), A(2, 2, 4, 3), A(2, 2, 4, 3)], {"is_causal": 1, "scale": 0.7}),
                  ([A(2, 4, 12), A(2, 6, 6), A(2, 6, 4)], {"q_num_heads": 4, "kv_num_heads": 2}),  # 3-D, GQA
                  ([A(2, 4, 4, 3), A(2, 2, 6, 3), A(2, 2, 6, 5), A(4, 6)], {}),  # float mask, GQA
                  ([A(2, 4, 4, 3), A(2, 2, 6, 3), A(2, 2, 6, 5), _KEEP_ROW], {}),  # bool mask
                  ([A(2, 2, 4, 3), A(2, 2, 6, 3), A(2, 2, 6, 5), _DEAD_ROW], {}),
                  ([A(1, 2, 4, 3), A(1, 2, 6, 3), A(1, 2, 6, 3), A(1, 1, 4, 6)],
                   {"softcap": 2.0, "qk_matmul_output_mode": 2}),
                  ([A(1, 2, 4, 3), A(1, 2, 6, 3), A(1, 2, 6, 3), A(1, 2, 4, 6)], {"qk_matmul_output_mode": 3}),
                  ([A(2, 2, 3, 4), A(2, 2, 3, 4), A(2, 2, 3, 5), _E, A(2, 2, 4, 4), A(2, 2, 4, 5)], {"is_causal": 1},
                   {"const_operands": (3,)}),  # KV cache
                  ([A(2, 2, 4, 3), A(2, 2, 5, 3), A(2, 2, 5, 4), A(2, 1, 4, 3)], {}),  # short mask
                  ([A(1, 2, 5, 3), A(1, 2, 5, 3), A(1, 2, 5, 3)], {"left_window": 1, "right_window": 0}),
                  ([A(2, 2, 3, 4), A(2, 2, 5, 4), A(2, 2, 5, 5), _E, _E, _E, _I(3, 5)], {"is_causal": 1},
                   {"const_operands": (3, 4, 5)})],
    "rotary_embedding": [([A(2, 3, 4, 8), A(2, 4, 4), A(2, 4, 4)], {}),
                         ([A(2, 3, 4, 8), A(2, 4, 4), A(2, 4, 4)], {"interleaved": 1}),
                         ([A(2, 4, 16), A(2, 4, 2), A(2, 4, 2)], {"num_heads": 2, "rotary_dim": 4, "interleaved": 1}),
                         ([A(2, 3, 4, 8), A(1, 4, 2), A(1, 4, 2)], {"rotary_dim": 4}),
                         ([A(2, 3, 4, 8), A(6, 4), A(6, 4), _I([0, 1, 2, 2], [5, 4, 0, 1])], {})],
    "einsum": [([A(2, 3, 4), A(2, 4, 5)], {"equation": "bij,bjk->bik"}),
               ([A(3, 4)], {"equation": "ij->ji"}),
               ([A(3, 3, 2)], {"equation": "iij->ij"}),  # diagonal
               ([A(3, 4), A(5)], {"equation": "ij,k->i"}),  # a label only one operand has
               ([A(2, 1, 3, 4), A(5, 4, 6)], {"equation": "...ij,...jk->...ik"}),  # broadcast ellipsis
               ([A(3, 4), A(3, 4), A(4, 2)], {"equation": "ij,ij,jk->ik"}),
               ([A(3, 4), A(4, 5)], {"equation": "ij,jk"})],
})

CASES.update({
    "keyed_dropout": [([A(4, 6), np.array(3, np.int64)], {"ratio": 0.3, "seed": 5}),
                      ([A(2, 3, 5), np.array(11, np.int64)], {"ratio": 0.0})],
})


# -- recurrent ops and linear attention (ir/grads/sequence_rnn.py): seq 3, batch 2, input 4, hidden 3.
# Absent optional operands in the middle are empty constants; sequence_lens are integer constants.
def _R(*shape: int) -> np.ndarray:
    return 0.5 * A(*shape)


_LENS = np.array([3, 1], np.int32)
_NOGRAD = {"const_operands": (4,)}  # the empty sequence_lens stand-in
_LA_FD = {"eps": 1e-3, "rtol": 1e-3}  # the reference runs the recurrence in float32
CASES.update({
    "lstm": [([_R(3, 2, 4), _R(1, 12, 4), _R(1, 12, 3)], {"hidden_size": 3}),
             ([_R(3, 2, 4), _R(1, 12, 4), _R(1, 12, 3), _R(1, 24), _E, _R(1, 2, 3), _R(1, 2, 3), _R(1, 9)],
              {"hidden_size": 3}, _NOGRAD),  # initial states, peepholes
             ([_R(3, 2, 4), _R(2, 12, 4), _R(2, 12, 3), _R(2, 24)],
              {"hidden_size": 3, "direction": "bidirectional", "clip": 0.9}),
             ([_R(2, 3, 4), _R(1, 12, 4), _R(1, 12, 3), _R(1, 24), _E, _R(2, 1, 3), _R(2, 1, 3)],
              {"hidden_size": 3, "layout": 1, "direction": "reverse", "input_forget": 1}, _NOGRAD),
             ([_R(3, 2, 4), _R(1, 12, 4), _R(1, 12, 3), _R(1, 24), _LENS], {"hidden_size": 3}),
             ([_R(3, 2, 4), _R(1, 12, 4), _R(1, 12, 3)],
              {"hidden_size": 3, "activations": ["Sigmoid", "Softplus", "LeakyRelu"], "activation_alpha": [0.2]})],
    "gru": [([_R(3, 2, 4), _R(1, 9, 4), _R(1, 9, 3)], {"hidden_size": 3}),
            ([_R(3, 2, 4), _R(1, 9, 4), _R(1, 9, 3), _R(1, 18), _E, _R(1, 2, 3)],
             {"hidden_size": 3, "linear_before_reset": 1}, _NOGRAD),
            ([_R(3, 2, 4), _R(2, 9, 4), _R(2, 9, 3), _R(2, 18)],
             {"hidden_size": 3, "direction": "bidirectional", "linear_before_reset": 1}),
            ([_R(3, 2, 4), _R(1, 9, 4), _R(1, 9, 3), _R(1, 18), np.array([2, 3], np.int64), _R(1, 2, 3)],
             {"hidden_size": 3, "direction": "reverse"}),
            ([_R(2, 3, 4), _R(1, 9, 4), _R(1, 9, 3)],
             {"hidden_size": 3, "layout": 1, "activations": ["HardSigmoid", "Elu"], "activation_alpha": [0.3, 0.9],
              "activation_beta": [0.4], "clip": 0.8})],
    "rnn": [([_R(3, 2, 4), _R(1, 3, 4), _R(1, 3, 3), _R(1, 6)], {"hidden_size": 3}),
            ([_R(3, 2, 4), _R(2, 3, 4), _R(2, 3, 3), _R(2, 6), _E, _R(2, 2, 3)],
             {"hidden_size": 3, "direction": "bidirectional", "activations": ["Affine", "ScaledTanh"],
              "activation_alpha": [0.7, 0.8], "activation_beta": [0.1, 1.2]}, _NOGRAD),
            ([_R(3, 2, 4), _R(1, 3, 4), _R(1, 3, 3)], {"hidden_size": 3, "activations": ["Softsign"]}),
            ([_R(3, 2, 4), _R(1, 3, 4), _R(1, 3, 3), _R(1, 6), _LENS],
             {"hidden_size": 3, "direction": "reverse", "activations": ["Sigmoid"]})],
    "linear_attention": [
        ([_R(2, 3, 4), _R(2, 3, 4), _R(2, 3, 6)], {"q_num_heads": 2, "kv_num_heads": 2, "update_rule": "linear"},
         _LA_FD),
        ([_R(2, 3, 8), _R(2, 3, 4), _R(2, 3, 6), _R(2, 2, 2, 3)],
         {"q_num_heads": 4, "kv_num_heads": 2, "update_rule": "linear", "scale": 0.6}, _LA_FD),  # GQA, past state
        ([_R(2, 3, 4), _R(2, 3, 4), _R(2, 3, 6), _E, -np.abs(_R(2, 3, 2))],
         {"q_num_heads": 2, "kv_num_heads": 2, "update_rule": "gated"}, {**_LA_FD, "const_operands": (3,)}),
        ([_R(2, 3, 4), _R(2, 3, 4), _R(2, 3, 6), _R(2, 2, 2, 3), _E, np.abs(_R(2, 3, 2))],
         {"q_num_heads": 2, "kv_num_heads": 2, "update_rule": "delta"}, {**_LA_FD, "const_operands": (4,)}),
        ([_R(2, 3, 8), _R(2, 3, 4), _R(2, 3, 6), _R(2, 2, 2, 3), -np.abs(_R(2, 3, 4)), np.abs(_R(2, 3, 1))],
         {"q_num_heads": 4, "kv_num_heads": 2, "update_rule": "gated_delta"}, _LA_FD)],  # per-feature decay
})

# drawn last, so the samples above keep their values: a pad that leaves the leading axis alone (the
# shape-generic case of tests/training/test_vjp_symbolic.py)
CASES["pad"] = CASES["pad"] + [([A(2, 3, 4)], {"pads": [0, 1, -1, 0, 2, 1]})]
