"""Run the official ONNX node tests (ordinary-tensor category) on an nnc backend and report.

    python tests/conformance/report.py [--target reference] [--filter REGEX] [--failures]

It reproduces the comparison of ``onnx.backend.test`` (same data sets, same rtol/atol) without the
unittest machinery, so it is quick to run while working on op coverage. The pytest suite in this
folder is the authority; this is a development tool.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import time
import traceback
import warnings

import numpy as np
from onnx.backend.test.loader import load_model_tests
from onnx.backend.test.runner import Runner

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from categories import numeric_node_tests, training_node_tests  # noqa: E402

import nnc  # noqa: E402


def run_case(case, target: str) -> str | None:
    """None if the case passes, else a one-line reason."""
    try:
        cm = nnc.compile(case.model, target=target)

        for inputs, outputs in case.data_sets:
            inputs = [_normalize(x) for x in inputs]
            outputs = [_normalize(x) for x in outputs]
            got = cm(*inputs) if len(inputs) != 1 else cm(inputs[0])
            got = got if isinstance(got, tuple) else (got,)
            if len(got) != len(outputs):
                return f"{len(got)} outputs, expected {len(outputs)}"
            for g, r in zip(got, outputs):
                if g.dtype != r.dtype and not (r.dtype == object):
                    return f"dtype {g.dtype} != {r.dtype}"
                Runner.assert_similar_outputs([r], [g], rtol=case.rtol, atol=case.atol)
    except AssertionError as e:
        return "mismatch: " + str(e).strip().splitlines()[0][:160]
    except nnc.NncError as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    except Exception as e:  # noqa: BLE001
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return f"CRASH {type(e).__name__}: {str(e)[:150]} @ {tb.filename.rsplit('/', 1)[-1]}:{tb.lineno}"
    return None


def _normalize(x):
    import onnx
    from onnx import numpy_helper

    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="reference")
    ap.add_argument("--filter", default=None)
    ap.add_argument("--failures", action="store_true", help="list every failure with its reason")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    names = numeric_node_tests() | training_node_tests()
    cases = [t for t in load_model_tests(kind="node") if t.name in names]
    if a.filter:
        cases = [c for c in cases if re.search(a.filter, c.name)]
    t0 = time.time()
    fails: dict[str, str] = {}
    for c in cases:
        r = run_case(c, a.target)
        if r:
            fails[c.name] = r
    n = len(cases)
    print(f"{n - len(fails)} passed, {len(fails)} failed of {n} ({time.time() - t0:.1f}s)")
    if a.failures:
        for k, v in sorted(fails.items()):
            print(f"  {k}: {v}")
    kinds = collections.Counter(v.split(":")[0] for v in fails.values())
    print(dict(kinds.most_common(12)))
    _ = np


if __name__ == "__main__":
    main()
