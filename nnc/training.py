"""Training mode: ``nnc.compile(model, mode="train", ...)`` returns a ``TrainingSession``.

The session compiles one training step (``passes/training/step.py``: forward, loss, backward and
optimizer update in one graph) and holds the parameters, batch-norm buffers and optimizer state as
numpy arrays keyed by the model's own names. ``step(feeds)`` passes them to the compiled step with
the batch, the learning rate and the step count, and swaps in the updated arrays the step returns
(a functional update: the executable writes the new values to fresh output arrays rather than
aliasing the inputs, so a step that fails leaves the session as it was).

    sess = nnc.compile("mlp.onnx", target="x86", mode="train", loss="cross_entropy",
                       optimizer="adam", lr=1e-3)
    for x, y in batches:
        loss = sess.step({"x": x, "labels": y})
    sess.save("ckpt.npz"); sess.restore("ckpt.npz")
    inf = sess.export_inference()          # an inference Module with the trained weights
    inf.save_onnx("trained.onnx")          # when the source was ONNX
    nnc.compile(inf.module, target="x86")  # mode="infer"
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

from nnc.backends.artifact import npz_bytes, write_files
from nnc.backends.compiled import Backend, CompiledModel
from nnc.backends.options import CompileOptions
from nnc.frontends.onnx import import_model
from nnc.ir import InputError, ModelError, Module, NncError
from nnc.ir.specialize import specialize
from nnc.passes.training.optimizers import OptimizerConfig
from nnc.passes.training.step import StepSignature, build_train_step

from .loading import from_torch
from .pipeline import optimize

_HEADER = "__nnc_training__"
_STEP_OPTIONS = ("loss", "trainable", "frozen", "loss_output", "label_name", "reduction", "label_smoothing",
                 "gradients")
_OPTIM_OPTIONS = ("momentum", "dampening", "nesterov", "weight_decay", "betas", "beta1", "beta2", "eps")


def load_for_training(model: Any, example_args: Any = None, dynamic_shapes: Any = None) -> tuple[Module, Any]:
    """(module with bound trainable weights, the ONNX ModelProto when the source was ONNX). A torch
    ``nn.Module`` (traced with ``example_args`` in its current train/eval mode: ``module.train()``
    gives batch statistics and dropout), an ``ExportedProgram`` or a ``.pt2`` path imports through
    the PyTorch frontend, its parameters keyed by their torch names."""
    from nnc.frontends.torch.loader import is_exported_program, is_pt2_path, is_torch_module

    if is_torch_module(model) or is_exported_program(model) or is_pt2_path(model):
        if is_torch_module(model) and example_args is None:
            raise InputError("training a torch nn.Module needs example_args=(tensor, ...) to trace it")
        return from_torch(model, example_args or (), dynamic_shapes, weights="param"), None
    if isinstance(model, Module):
        if not any(p.binding is not None for p in model.main.params):
            raise ModelError("the module has no bound parameters to train (import ONNX with weights='param')")
        return model, None
    from nnc.frontends.onnx.loader import load_model

    proto, _ = load_model(model)
    return import_model(model, weights="param"), proto


def _static(module: Module, input_shapes: Mapping[str, Any] | None, batch_size: int | None) -> Module:
    """The module at the shapes asked for (``input_shapes``, or ``batch_size`` for the first dim of
    every input whose other dims are static); unchanged, symbolic dims and all, when neither is
    given: the step is then compiled shape-generic."""
    g = module.main
    if all(p.type.is_static for p in g.params) or (input_shapes is None and batch_size is None):
        return module
    shapes = {k: tuple(v) for k, v in (input_shapes or {}).items()}
    for p in g.params:
        if p.binding is None and p.name not in shapes and not p.type.is_static:
            if batch_size is None or p.type.shape is None or not all(
                    isinstance(d, int) for d in p.type.shape[1:]):
                raise ModelError(f"input {p.name} has the dynamic type {p.type}: batch_size fixes only a leading "
                                 "batch dim; pass input_shapes={name: shape} (or neither, for a shape-generic step)")
            shapes[p.name] = (int(batch_size),) + tuple(p.type.shape[1:])
    return specialize(module, shapes, {})


def _unbound(module: Module) -> Module:
    """A copy whose bound parameters are plain inputs (the session feeds them every step)."""
    m = module.clone()
    for p in m.main.params:
        p.binding = None
    return m


def _build(model: Any, opts: CompileOptions, example_args: Any, dynamic_shapes: Any):
    train = opts.train_options()
    step_opts = {k: train[k] for k in _STEP_OPTIONS if k in train}
    optim_opts = {k: train[k] for k in _OPTIM_OPTIONS if k in train}
    if "betas" in optim_opts:
        optim_opts["betas"] = tuple(float(b) for b in optim_opts["betas"])
    config = OptimizerConfig.make(train.get("optimizer", "sgd"), train.get("lr"), **optim_opts)
    module, proto = load_for_training(model, example_args, dynamic_shapes)
    if opts.dims:
        from nnc.ir.specialize import bind_dims

        module = bind_dims(module, opts.dims)
    module = _static(module, train.get("input_shapes"), train.get("batch_size"))
    step_module, sig = build_train_step(module, loss=step_opts.pop("loss", "cross_entropy"), optimizer=config,
                                        **step_opts)
    return step_module, sig, config, module, proto


def compile_training(model: Any, backend: Backend, opts: CompileOptions, example_args: Any = None,
                     dynamic_shapes: Any = None) -> TrainingSession:
    """Build and compile the training step of ``model``; see ``nnc.compile`` and docs/training.md."""
    step_module, sig, config, module, proto = _build(model, opts, example_args, dynamic_shapes)
    optimized, records, pipeline = optimize(step_module, "train", opts.pipeline_options())
    program = _unbound(optimized)
    executable, shapes = _compile_step(program, backend, opts)
    session = TrainingSession(step_module, sig, executable, backend, config, module, proto)
    session.report = training_report(optimized, records, backend.name, pipeline, module)
    session.report["options"] = opts.report()
    if shapes is not None:
        session.report["shapes"] = shapes
        session.report["memory"] = {**session.report.get("memory", {}), "planned": False,
                                    "reason": "symbolic dims: the arena is planned per input shape at run time"}
    if getattr(executable, "target_report", None) is not None:  # as nnc.compile's inference report has it
        session.report[backend.name] = executable.target_report  # e.g. report["x86"]["kernels"]
    session.program = CompiledModel(program, executable, backend, session.report, opts)
    return session


def _compile_step(program: Module, backend: Backend, opts: CompileOptions) -> tuple[Any, dict | None]:
    """(executable, report["shapes"] or None). A step with symbolic dims compiles once to
    shape-generic code where the backend can; otherwise once per input shape (and says why)."""
    from nnc.backends.compiled import NotShapeGeneric
    from nnc.ir.specialize import input_symbols

    from .specializer import Specializer, is_static

    if not backend.static_shapes or is_static(program):
        return backend.compile(program, opts), ({"generic": True, "symbols": input_symbols(program)}
                                                if not is_static(program) else None)
    if backend.shape_generic:
        try:
            return backend.compile(program, opts), {"generic": True, "symbols": input_symbols(program)}
        except NotShapeGeneric as e:
            reason = str(e)
    else:
        reason = f"target {backend.name!r} compiles static shapes only"
    return Specializer(program, lambda m: backend.compile(m, opts)), {"generic": False, "reason": reason}


def training_report(step: Module, records: list, target: str, pipeline: str, source: Module) -> dict[str, Any]:
    """The compile report of a training step, plus ``memory["inference"]``: the same model planned
    for inference at the same batch (frozen, -O3), so the two peaks sit side by side."""
    from nnc.passes.plan_memory import plan_graph

    from .report import build_report, memory_summary

    report = build_report(step, records, target, "train", pipeline)
    mem = report["memory"]
    state = sum(int(np.prod(p.type.shape)) * p.dtype.itemsize for p in step.main.params if p.binding is not None)
    mem["state_bytes"] = state  # parameters, buffers and optimizer state fed to every step
    infer, _, _ = optimize(source, "infer", {})
    if "memory_plan" not in infer.annotations and all(p.type.is_static for p in infer.main.params):
        infer.annotations["memory_plan"] = plan_graph(infer.main)
    mem["inference"] = memory_summary(infer)
    if mem.get("planned") and mem["inference"].get("planned") and mem["inference"]["arena_bytes"]:
        mem["train_over_infer"] = round(mem["arena_bytes"] / mem["inference"]["arena_bytes"], 2)
    return report


class InferenceExport:
    """An inference model with trained weights: ``module`` (compile it with ``nnc.compile``) and,
    when the source was ONNX, ``save_onnx(path)``."""

    def __init__(self, module: Module, proto: Any, weights: Mapping[str, np.ndarray]):
        self.module = module
        self._proto = proto
        self._weights = dict(weights)

    def save_onnx(self, path: str | os.PathLike) -> None:
        """Write the source ONNX model with the trained initializers, in inference form (training-
        mode BatchNormalization and Dropout switched off)."""
        if self._proto is None:
            raise ModelError("save_onnx needs an ONNX source model; this one came from a Module")
        import onnx
        from onnx import numpy_helper

        m = onnx.ModelProto()
        m.CopyFrom(self._proto)
        for t in m.graph.initializer:
            if t.name in self._weights:
                t.CopyFrom(numpy_helper.from_array(np.asarray(self._weights[t.name]).astype(
                    numpy_helper.to_array(t).dtype), t.name))
        for node in m.graph.node:
            if node.op_type == "BatchNormalization":
                for a in node.attribute:
                    if a.name == "training_mode":
                        a.i = 0
                del node.output[1:]
            elif node.op_type == "Dropout" and len(node.input) > 2:
                del node.input[2:]  # training_mode absent means inference
        onnx.save(m, str(path))


class TrainingSession:
    """A compiled training step and the tensors it updates. See the module docstring."""

    def __init__(self, step_module: Module, signature: StepSignature, executable: Any, backend: Backend,
                 optimizer: OptimizerConfig, source: Module, proto: Any = None):
        self.step_module = step_module
        self.signature = signature
        self.executable = executable
        self.backend = backend
        self.target = backend.name
        self.optimizer = optimizer
        self.lr = optimizer.lr
        self.step_count = 0
        self._source = source
        self._proto = proto
        consts = step_module.constants
        sig = signature
        self._tensors: dict[str, np.ndarray] = {n: np.array(consts[sig.bindings[n]], copy=True)
                                                for n in sig.params + sig.buffers + sig.state}
        self._grads: dict[str, np.ndarray] = {}
        self.report: dict[str, Any] = {}  # the compile report (docs/compile-report.md), set by compile_training
        self.program: CompiledModel | None = None  # the compiled step (save_step), set by compile_training
        g = step_module.main
        self.input_types = {p.name: p.type for p in g.params if p.name in sig.data_inputs or p.name == sig.label}

    # -- running -----------------------------------------------------------------------------------
    def step(self, feeds: Mapping[str, Any]) -> float:
        """One optimizer step on a batch (``{input: array, labels: array}``); returns the loss."""
        sig = self.signature
        missing = [n for n in sig.data_inputs + [sig.label] if n not in feeds]
        if missing:
            raise InputError(f"step() is missing {missing}; it takes {sig.data_inputs + [sig.label]}")
        extra = sorted(set(feeds) - set(sig.data_inputs) - {sig.label})
        if extra:
            raise InputError(f"step() got unexpected input(s) {extra}; it takes {sig.data_inputs + [sig.label]}")
        bound: dict[str, int] = {}  # symbolic dims must agree across the inputs (batch of data and labels)
        full = {n: self._batch_array(n, a, bound) for n, a in feeds.items()}
        full[sig.lr] = np.asarray(self.lr, np.float32)
        full[sig.step] = np.asarray(self.step_count + 1, np.int64)
        full.update(self._tensors)
        outs = self.executable.run(full)
        self.step_count += 1
        for n in sig.params + sig.buffers + sig.state:
            self._tensors[n] = outs[sig.new(n)]
        if sig.gradients:
            self._grads = {n: outs[sig.grad(n)] for n in sig.params}
        return float(outs[sig.loss])

    def _batch_array(self, name: str, a: Any, bound: dict[str, int]) -> np.ndarray:
        t = self.input_types[name]
        arr = np.asarray(a)
        why = t.matches(t.dtype, tuple(arr.shape), bound)
        if why is not None:
            fixed = "" if not t.is_static else " (this step was compiled for a fixed batch size)"
            raise InputError(f"input {name!r}: {why}{fixed}")
        if arr.dtype != t.dtype.numpy and arr.dtype.kind == t.dtype.numpy.kind:
            arr = arr.astype(t.dtype.numpy)  # int32 labels, f64 data: convert rather than refuse
        return arr

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next steps (a run-time input: nothing recompiles)."""
        self.lr = float(lr)

    # -- tensors -------------------------------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """The trained parameters by the model's names (current values; copies)."""
        return {n: self._tensors[n].copy() for n in self.signature.params}

    def buffers(self) -> dict[str, np.ndarray]:
        """Batch-norm running statistics of a training-form model."""
        return {n: self._tensors[n].copy() for n in self.signature.buffers}

    def gradients(self) -> dict[str, np.ndarray]:
        """The gradients of the last step, by parameter name (empty before the first step)."""
        if not self.signature.gradients:
            raise NncError("this session was compiled with gradients=False")
        return {n: a.copy() for n, a in self._grads.items()}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return {n: self._tensors[n].copy() for n in self.signature.state}

    # -- the step as an artifact ---------------------------------------------------------------------
    def save_step(self, path: str | os.PathLike) -> list[str]:
        """Save the compiled step itself (x86: ``step.so`` + header + manifest; inputs: data, labels,
        lr, step, then every parameter/buffer/state tensor; outputs: loss, then ``<name>.new``) and
        the current tensors beside it as ``<stem>.init.npz``; returns the files written."""
        path = os.fspath(path)
        files = self.program.save(path)
        init = os.path.splitext(path)[0] + ".init.npz"
        write_files({init: npz_bytes(self._tensors)})
        return files + [init]

    # -- checkpoints -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Parameters, buffers and optimizer state in an ``.npz``, with a JSON header (step count,
        learning rate, optimizer, names) under the key ``__nnc_training__``."""
        header = {"version": 1, "step": self.step_count, "lr": self.lr, "optimizer": self.optimizer.to_json(),
                  "signature": self.signature.to_json()}
        arrays = dict(self._tensors)
        arrays[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    def restore(self, path: str | os.PathLike) -> None:
        """Load a checkpoint written by ``save`` for the same model and optimizer."""
        with np.load(path, allow_pickle=False) as z:
            if _HEADER not in z.files:
                raise ModelError(f"{path}: not an nnc training checkpoint (no {_HEADER} header)")
            header = json.loads(bytes(z[_HEADER]).decode())
            arrays = {k: z[k] for k in z.files if k != _HEADER}
        want = set(self._tensors)
        if set(arrays) != want:
            diff = sorted(want.symmetric_difference(arrays))
            raise ModelError(f"{path}: the checkpoint does not match this training step (differs in {diff[:6]})")
        for k, a in arrays.items():
            if a.shape != self._tensors[k].shape:
                raise ModelError(f"{path}: {k} has shape {list(a.shape)}, expected {list(self._tensors[k].shape)}")
            self._tensors[k] = a.astype(self._tensors[k].dtype)
        self.step_count = int(header["step"])
        self.lr = float(header["lr"])

    # -- inference ---------------------------------------------------------------------------------------
    def export_inference(self) -> InferenceExport:
        """The source model with the trained weights, in inference form: training batch norm uses the
        running statistics again, dropout is the identity."""
        m = self._source.clone()
        g = m.main
        trained = {**{n: self._tensors[n] for n in self.signature.params + self.signature.buffers}}
        for p in g.params:
            if p.binding is not None and p.name in trained:
                m.constants[p.binding] = np.array(trained[p.name], copy=True)
        from nnc.ir import Builder

        for op in list(g.ops):
            if op.opname == "batch_norm_train":
                b = Builder(m, g)
                b.set_insertion_before(op)
                y = b.op("batch_norm", *op.operands, epsilon=op.attrs["epsilon"], name=op.results[0].name + ".inf")
                g.replace_all_uses(op.results[0], y)
                if any(r.uses or r in g.outputs for r in op.results[1:]):
                    raise ModelError(f"{op.where()}: its running statistics are used by the model itself")
                g.erase(op)
            elif op.opname in ("dropout", "keyed_dropout"):
                if op.results[1].uses or op.results[1] in g.outputs:
                    raise ModelError(f"{op.where()}: the dropout mask is used by the model")
                g.replace_all_uses(op.results[0], op.operands[0])
                g.erase(op)
        m.metadata = {k: v for k, v in m.metadata.items() if k != "mode"}
        return InferenceExport(m, self._proto, trained)

    def __repr__(self) -> str:
        return (f"<TrainingSession target={self.target} optimizer={self.optimizer.name} "
                f"params={len(self.signature.params)} step={self.step_count}>")
