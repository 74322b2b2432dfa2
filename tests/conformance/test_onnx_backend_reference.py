"""The official ONNX backend test suite on ``nnc.onnx_backend.ReferenceBackend``: the 1,615
ordinary-tensor node tests, the 33 control-flow ("cf") and 29 sequence/optional ("seq") node tests,
and the 9 real-model tests (model-zoo architectures in the onnx package).
Known failures are strict xfails listed with reasons in expected_failures_reference.txt."""

from __future__ import annotations

import re
import warnings

import onnx.backend.test
from categories import category_node_tests, numeric_node_tests, training_node_tests

from nnc.onnx_backend import ReferenceBackend

NNC_TARGET = "reference"
REAL_MODELS = ["test_bvlc_alexnet", "test_densenet121", "test_inception_v1", "test_inception_v2", "test_resnet50",
               "test_shufflenet", "test_squeezenet", "test_vgg19", "test_zfnet512"]

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _backend_test = onnx.backend.test.BackendTest(ReferenceBackend, __name__)
    _names = sorted(numeric_node_tests() | training_node_tests() | category_node_tests("cf")
                    | category_node_tests("seq") | set(REAL_MODELS))
    NNC_INCLUDED = frozenset(_names)
    _backend_test.include("^(" + "|".join(re.escape(n) for n in _names) + ")_cpu$")
    globals().update(_backend_test.test_cases)
