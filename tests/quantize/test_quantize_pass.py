"""The quantization pass: scheme arithmetic, observers, calibration data forms, the float -> int8
rewrite of a small CNN (checked against onnxruntime's float result) and the pass/API/CLI wiring."""

from __future__ import annotations

import collections
import os
import sys

import numpy as np
import onnxruntime as ort
import pytest

import nnc
from nnc.ir import InputError, interpret
from nnc.passes import make_pass
from nnc.passes.quantize import load_calibration, quantize_module
from nnc.passes.quantize.observers import make_observer
from nnc.passes.quantize.scheme import activation_params, qadd_params, quantize_multiplier

sys.path.insert(0, os.path.dirname(__file__))
from quant_models import feeds, small_cnn, sqnr_db


def ort_run(model, f):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, f)[0]


@pytest.mark.parametrize("real", [1.0, 0.5, 0.75, 1e-3, 3.3e-9, 1234.5, 0.999999999])
def test_quantize_multiplier_is_within_2_to_minus_30(real):
    m, s = quantize_multiplier(real)
    assert 0 <= int(s) <= 62 and 2**30 <= int(m) < 2**31
    assert abs(int(m) / 2.0 ** int(s) - real) <= real * 2.0**-30


def test_quantize_multiplier_of_tiny_factors_keeps_the_shift_in_range():
    m, s = quantize_multiplier(np.array([2.0**-40, 0.0]))
    assert list(s) == [62, 0] and list(m) == [2**22, 0]  # 2**-40 == 2**22 / 2**62 exactly


def test_qadd_params_rescale_both_inputs():
    a, b, y = activation_params(-2, 2), activation_params(-0.5, 0.5), activation_params(-2.5, 2.5)
    p = qadd_params(a, b, y)
    assert abs(p["a_multiplier"] / 2 ** p["shift"] - a.scale / y.scale) < 1e-8
    assert abs(p["b_multiplier"] / 2 ** p["shift"] - b.scale / y.scale) < 1e-8


def test_observers_on_known_distributions():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200_000)
    obs = {k: make_observer(k) for k in ("minmax", "percentile", "entropy")}
    for chunk in np.array_split(x, 5):  # growing maximum: the histogram is re-binned
        for o in obs.values():
            o.observe(chunk)
    assert obs["minmax"].range() == (x.min(), x.max())
    t = obs["percentile"].range()[1]
    assert abs(t - np.percentile(np.abs(x), 99.99)) < 2 * np.abs(x).max() / 2048 + 1e-3
    assert 3.0 < obs["entropy"].range()[1] <= x.max()
    # heavy tails: the KL threshold clips the outliers but keeps the bulk (99.9% of |x|)
    y = rng.laplace(size=200_000)
    ent = make_observer("entropy")
    ent.observe(y)
    assert np.percentile(np.abs(y), 99.9) < ent.range()[1] < np.abs(y).max()


def test_rewrite_quantizes_every_op_and_tracks_onnxruntime_fp32():
    model = small_cnn()
    m = nnc.from_onnx(model)
    stats: dict[str, int] = {}
    q = quantize_module(m, feeds(16, 1), stats=stats)
    ops = collections.Counter(op.opname for op in q.main.ops)
    assert ops["qconv"] == 3 and ops["qmatmul"] == 1 and ops["qadd"] == 1 and ops["conv"] == 0
    assert ops["quantize"] == 1 and ops["dequantize"] == 1  # at the input and the output only
    assert not any(k.startswith("f32 ") for k in stats)
    for f in feeds(3, 7):
        want = ort_run(model, f)
        got = interpret(q, f)["y"]
        assert sqnr_db(want, got) > 30


@pytest.mark.parametrize("observer", ["percentile", "entropy"])
def test_histogram_observers_give_a_working_model(observer):
    model = small_cnn()
    q = quantize_module(nnc.from_onnx(model), feeds(8, 1), observer=observer)
    f = feeds(1, 9)[0]
    assert sqnr_db(ort_run(model, f), interpret(q, f)["y"]) > 20


def test_calibration_from_npz_stacked_and_batch_forms(tmp_path):
    m = nnc.from_onnx(small_cnn())
    x = np.random.default_rng(0).standard_normal((5, 1, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "a.npz", x=x)
    assert len(load_calibration(str(tmp_path / "a.npz"), m)) == 5
    np.savez(tmp_path / "b.npz", x=x[:, 0])  # samples along the batch axis
    got = load_calibration(str(tmp_path / "b.npz"), m)
    assert len(got) == 5 and got[0]["x"].shape == (1, 3, 16, 16)
    np.savez(tmp_path / "c.npz", y=x)
    with pytest.raises(InputError, match="name no input"):
        load_calibration(str(tmp_path / "c.npz"), m)


def test_pass_is_registered_and_api_compiles_int8(tmp_path):
    model = small_cnn()
    x = np.stack([f["x"] for f in feeds(8, 1)])
    np.savez(tmp_path / "cal.npz", x=x)
    p = make_pass("quantize-int8", {"calibration": str(tmp_path / "cal.npz"), "observer": "minmax"})
    m = nnc.from_onnx(model)
    p.run(m)
    assert any(op.opname == "qconv" for op in m.main.ops)
    cm = nnc.compile(model, target="reference", quantize="int8", calibration=str(tmp_path / "cal.npz"))
    f = feeds(1, 3)[0]
    assert any(op.opname == "qconv" for op in cm.module.main.ops)
    assert sqnr_db(ort_run(model, f), cm.run(f)["y"]) > 30


def test_cli_says_in_one_line_that_calibration_is_missing(tmp_path, capsys):
    import onnx

    from nnc.cli import main

    path = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), path)
    assert main(["run", str(path), "--random-inputs", "--quantize", "int8", "-q"]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "calibration" in ln]
    assert len(err) == 1 and "no --calibration" in err[0]


def test_qdq_model_from_onnxruntime_quantize_static_matches_onnxruntime(tmp_path):
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from nnc.passes.quantize import import_qdq

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds(8, 1))

        def get_next(self):
            return next(self.it, None)

    onnx.save(small_cnn(), tmp_path / "f.onnx")
    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    q = import_qdq(nnc.from_onnx(str(tmp_path / "q.onnx")))
    ops = collections.Counter(op.opname for op in q.main.ops)
    assert ops["qconv"] == 3 and ops["qmatmul"] == 1 and ops["qadd"] == 1 and ops["conv"] == 0
    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    y_scale = [float(onnx.numpy_helper.to_array(t)) for t in onnx.load(str(tmp_path / "q.onnx")).graph.initializer
               if t.name == "y_scale"][0]
    for f in feeds(4, 3):
        diff = np.abs(sess.run(None, f)[0] - interpret(q, f)["y"])
        # the integers agree except at f32-vs-fixed-point requantization ties: at most one step
        assert diff.max() <= y_scale * 1.01 and (diff > 1e-6).mean() <= 0.1
