"""The pass manager: pipeline strings, options, instrumentation and error reporting."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import pytest

from nnc.ir import Module, parse_module
from nnc.passes import Pass, PassError, PassManager, parse_pipeline, register_pass

TEXT = """module @m

graph @main(%x: f32[2]) -> (y: f32[2]) {
  %a = const dense<[1.0, 2.0]> : f32[2]
  %b = neg(%a) : f32[2]
  %dead = exp(%x) : f32[2]
  %y = add(%x, %b) : f32[2]
  return %y
}
"""


def test_parse_pipeline_with_options():
    assert parse_pipeline("freeze, fold-constants,fuse{max-ops=16,explain=true},plan-memory") == [
        ("freeze", {}), ("fold-constants", {}), ("fuse", {"max-ops": "16", "explain": "true"}), ("plan-memory", {})]
    with pytest.raises(PassError, match="bad pipeline"):
        parse_pipeline("dce,,{x}")


def test_unknown_pass_and_option_are_errors():
    with pytest.raises(PassError, match="unknown pass 'nope'"):
        PassManager("dce,nope")
    with pytest.raises(PassError, match="no option 'bogus'"):
        PassManager("fold-constants{bogus=1}")
    with pytest.raises(PassError, match="expects int"):
        PassManager("fold-constants{max-bytes=lots}")


def test_records_and_print_ir_after_all():
    out = io.StringIO()
    m = parse_module(TEXT)
    records = PassManager("fold-constants,dce", print_ir_after=["all"], out=out).run(m)
    assert [(r.name, r.changed, r.ops_before, r.ops_after) for r in records] == [
        ("fold-constants", True, 3, 2), ("dce", True, 2, 1)]
    text = out.getvalue()
    assert "// ----- IR after fold-constants -----" in text and "// ----- IR after dce -----" in text
    assert "exp(" not in text.split("after dce")[1]


def test_print_after_change_skips_unchanged_passes():
    out = io.StringIO()
    m = parse_module(TEXT)
    PassManager("dce,dce", print_after_change=True, out=out).run(m)
    assert out.getvalue().count("IR after dce") == 1


def test_dump_dir_writes_one_numbered_file_per_pass(tmp_path):
    m = parse_module(TEXT)
    PassManager("fold-constants,dce", dump_dir=str(tmp_path)).run(m)
    assert sorted(os.listdir(tmp_path)) == ["00-input.nnc", "01-fold-constants.nnc", "02-dce.nnc"]
    assert parse_module((tmp_path / "02-dce.nnc").read_text()) is not None


def test_time_passes_prints_a_table():
    out = io.StringIO()
    PassManager("dce", time_passes=True, out=out).run(parse_module(TEXT))
    assert "pass timing" in out.getvalue() and "total" in out.getvalue()


def test_disable_pass():
    m = parse_module(TEXT)
    records = PassManager("fold-constants,dce", disable=["dce"]).run(m)
    assert [r.name for r in records] == ["fold-constants"]
    with pytest.raises(PassError, match="unknown pass"):
        PassManager("dce", disable=["dcee"])


@register_pass("test-break-types")
@dataclass
class BreakTypes(Pass):
    """A deliberately wrong pass: retypes a value without changing its op."""

    def run(self, module: Module) -> bool:
        from nnc.ir import tensor

        op = next(op for op in module.main.ops if op.opname == "neg")
        op.results[0].type = tensor("f32", [3])
        return True


def test_verify_each_names_the_pass_that_broke_the_ir():
    with pytest.raises(PassError, match="IR invalid after pass 'test-break-types'"):
        PassManager("test-break-types", verify_each=True).run(parse_module(TEXT))
