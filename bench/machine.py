"""The machine a benchmark ran on: CPU model, cores, vector flags, versions, sgemm speed."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def parse_cpuinfo(text: str) -> dict:
    """CPU model, logical core count and vector flags from the text of ``/proc/cpuinfo``.

    The model and flags come from the first processor entry (all entries agree on a
    single-socket machine); ``cores`` counts the ``processor`` entries.
    """
    model, flags, cores = None, set(), 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            cores += 1
        elif key == "model name" and model is None:
            model = value
        elif key == "flags" and not flags:
            flags = set(value.split())
    avx512 = sorted(flag for flag in flags if flag.startswith("avx512"))
    return {"cpu_model": model, "cores": cores, "avx2": "avx2" in flags, "fma": "fma" in flags,
            "avx512": "avx512f" in flags, "avx512_flags": avx512}


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (None when it is not installed); imports nothing."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of a numpy float32 ``n x n`` matrix product (2 n^3 FLOPs)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def machine_info(sgemm_size: int = 2048) -> dict:
    """Everything about this machine and software that the results depend on."""
    text = CPUINFO.read_text(encoding="utf-8", errors="replace") if CPUINFO.exists() else ""
    info = parse_cpuinfo(text)
    if not info["cores"]:
        info["cores"] = os.cpu_count()
    info["cores_usable"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info.update({
        "platform": platform.platform(), "python": platform.python_version(),
        "tensorflow": package_version("tensorflow"), "keras": package_version("keras"),
        "numpy": package_version("numpy"), "seqapp": package_version("seqapp"),
        "sgemm_size": sgemm_size, "sgemm_gflops": round(sgemm_gflops(sgemm_size), 1),
    })
    return info
