"""The one-line description of the machine every benchmark prints beside its figures."""

from __future__ import annotations

import os
import platform
import sys


def machine() -> str:
    """CPU model and cores, Python and OS; the GPU, torch version and threads when torch is loaded."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    parts = [f"CPU {cpu} x{os.cpu_count()}", f"Python {platform.python_version()}", platform.platform()]
    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.cuda.is_available():
            parts.insert(0, torch.cuda.get_device_name())
        parts.insert(-2, f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    return "; ".join(parts)
