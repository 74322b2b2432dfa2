"""Optimisation levels: ``-O0`` .. ``-O3`` as pipeline strings, per mode.

Inference:
- O0: freeze only (weights become constants; the graph is otherwise as imported).
- O1: + constant folding (shape subgraphs included), static dynamic-operands, simplification, DCE.
- O2: + CSE and batch-norm folding.
- O3: + structural re-parameterisation, the batch norms no conv absorbed as per-channel affine
  elementwise ops, and fusion.

Training keeps the weights as parameters (no freeze); its levels grow with the training passes, and
-O3 fuses elementwise chains and conv/matmul epilogues of the step (a relu's gradient mask and
select become one kernel) as inference -O3 does.
"""

from __future__ import annotations

from .registry import PassError

_O1 = "freeze,fold-constants,fold-dynamic,simplify,dce"
_O2 = _O1 + ",cse,fold-batchnorm,simplify,dce"
_O3 = _O2 + ",reparameterize,batchnorm-affine,fuse,dce"

PRESETS: dict[str, dict[int, str]] = {
    "infer": {0: "freeze", 1: _O1, 2: _O2, 3: _O3},
    "train": {0: "", 1: "fold-constants,simplify,dce", 2: "fold-constants,simplify,cse,dce",
              3: "fold-constants,simplify,cse,dce,fuse,dce"},
}
DEFAULT_LEVEL = 3


def preset(mode: str, level: int) -> str:
    if mode not in PRESETS:
        raise PassError(f"no optimisation presets for mode {mode!r}")
    if level not in PRESETS[mode]:
        raise PassError(f"optimisation level must be 0..3, got {level}")
    return PRESETS[mode][level]
