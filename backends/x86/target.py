"""The x86 target description: CPU name, feature list, vector width, and the LLVM target machine.

By default nnc compiles for the host: its CPU name *and* its feature list (LLVM's host CPU name
alone can miss features a VM exposes, or include ones it hides). ``cpu="x86-64"`` with no features
gives generic code; ``cpu="haswell"`` gives AVX2.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import llvmlite.binding as llvm

from nnc.ir import TargetError

TRIPLE = "x86_64-unknown-linux-gnu"


@dataclass(frozen=True)
class TargetInfo:
    cpu: str
    features: str  # "+avx2,+fma,-avx512f,..."

    @property
    def feature_set(self) -> frozenset[str]:
        return frozenset(f[1:] for f in self.features.split(",") if f.startswith("+"))

    def has(self, feature: str) -> bool:
        return feature in self.feature_set

    @property
    def vector_bits(self) -> int:
        """The widest float vector the target computes with."""
        if self.has("avx512f"):
            return 512
        if self.has("avx2") or self.has("avx"):
            return 256
        return 128

    @property
    def f32_lanes(self) -> int:
        return self.vector_bits // 32

    @property
    def has_fma(self) -> bool:
        return self.has("fma") or self.has("avx512f")

    def key(self) -> str:
        return f"{self.cpu}|{self.features}"


@functools.lru_cache(maxsize=1)
def host() -> TargetInfo:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return TargetInfo(llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten())


def resolve(cpu: str | None = None, features: str | None = None) -> TargetInfo:
    """The target for ``--cpu`` / ``--target-features``; None means the host's."""
    h = host()
    if cpu is None or cpu == "native" or cpu == h.cpu:
        return TargetInfo(h.cpu, h.features if features is None else features)
    target = llvm.Target.from_triple(TRIPLE)
    try:
        tm = target.create_target_machine(cpu=cpu, features=features or "")
    except RuntimeError as e:
        raise TargetError(f"unknown CPU {cpu!r}: {e}") from None
    del tm
    return TargetInfo(cpu, features if features is not None else _implied_features(cpu))


_KNOWN = {
    "x86-64": "", "x86-64-v2": "+sse4.2,+popcnt", "x86-64-v3": "+avx,+avx2,+fma,+f16c,+bmi2",
    "haswell": "+avx,+avx2,+fma,+f16c,+bmi2", "skylake": "+avx,+avx2,+fma,+f16c,+bmi2",
    "x86-64-v4": "+avx,+avx2,+fma,+f16c,+avx512f,+avx512bw,+avx512dq,+avx512vl",
    "skylake-avx512": "+avx,+avx2,+fma,+f16c,+avx512f,+avx512bw,+avx512dq,+avx512vl",
    "icelake-server": "+avx,+avx2,+fma,+f16c,+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512vnni",
}


def _implied_features(cpu: str) -> str:
    """LLVM derives features from the CPU name; we also need them to pick vector widths."""
    return _KNOWN.get(cpu, "")


def target_machine(info: TargetInfo, opt: int = 3):
    host()
    target = llvm.Target.from_triple(TRIPLE)
    return target.create_target_machine(cpu=info.cpu, features=info.features, opt=opt, reloc="pic",
                                        codemodel="default")
