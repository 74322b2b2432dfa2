"""The training example runs from a fresh checkout and reaches the accuracy the README states."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_train_iris_reaches_the_stated_accuracy():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_iris.py")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    acc = float(re.search(r"test accuracy: ([\d.]+)%", out.stdout).group(1))
    readme = (ROOT / "README.md").read_text()
    stated = float(re.search(r"reaches\s+([\d.]+)% test accuracy", readme).group(1))
    assert acc >= stated
