"""Loading out-of-tree passes: a Python file that registers passes with ``@register_pass``.

    nnc compile model.onnx --load-pass-plugin my_pass.py --passes "my-pass"
    nnc.compile(model, passes="my-pass", pass_plugins=["my_pass.py"])
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys

from .registry import PassError

_LOADED: dict[str, object] = {}


def load_pass_plugin(path: str) -> None:
    """Import the file once (by absolute path); its ``@register_pass`` decorators register its passes."""
    full = os.path.abspath(path)
    if full in _LOADED:
        return
    if not os.path.isfile(full):
        raise PassError(f"pass plugin {path}: no such file")
    name = "nnc_pass_plugin_" + hashlib.sha1(full.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise PassError(f"pass plugin {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except PassError:
        raise
    except Exception as e:
        del sys.modules[name]
        raise PassError(f"pass plugin {path} failed to load: {type(e).__name__}: {e}") from None
    _LOADED[full] = module
