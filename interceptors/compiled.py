"""Runs the server chain's modules as compiled by mypyc when a build of their current source
exists, and as plain Python otherwise.

The chain's layers run on every RPC, and in CPython most of what they cost is the
interpreter running their bytecode: on the cheapest RPC, compiled they cost ~10k fewer CPU
instructions per call (`tests/bench/overhead_instructions.py`). mypyc compiles these
modules as they are written (typed Python, checked by mypy --strict anyway), so there is one
source; `tools/compile_interceptors.py` (run by `./dev`) builds them into build/mypyc.

A build is used only when it was made from the source as it is now (a digest of the
compiled modules' files and the Python version), so an edit takes effect at once, as plain
Python, until the next `./dev` rebuilds it; the package's `__init__` puts the build first
on the package's path. NOVA_COMPILED=0 runs plain Python regardless (a debugger, a
comparison); NOVA_COMPILED=1 makes a missing or stale build an ImportError (`./dev test`
sets it once the build succeeded, so the suite tests what `./dev up` runs).

Compiled classes are mypyc's native classes, which behave as their source says except
that a frozen dataclass cannot be unpickled; the settings dataclasses, which bench
servers receive pickled, stay Python classes (`mypyc_attr(native_class=False)`).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import MutableSequence
from pathlib import Path

MODULES = (
    "_status",
    "access_log",
    "auth",
    "backpressure",
    "chain",
    "context",
    "deadlines",
    "duration_histogram",
    "errors",
    "ids_only_tracer",
    "limiters",
    "log_time",
    "request_context",
    "telemetry",
)
"""The modules compiled: the chain, the server layers and what they call on every call
(the ids-only tracer, the log line's time). The client side is not: its layers run once
per outgoing call, around a network round trip."""

PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE_DIR.parent / "build" / "mypyc"
"""Where tools/compile_interceptors.py puts the build: the package's modules under
interceptors/, and the digest of the source they were built from in DIGEST_FILE."""
DIGEST_FILE = "source-digest"
SETTING = "NOVA_COMPILED"


def source_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """What a build must have been made from to be used: the compiled modules' source, and
    the Python it was built for."""
    digest = hashlib.sha256(sys.version.encode())
    for name in MODULES:
        digest.update(f"\0{name}\0".encode())
        digest.update((package_dir / f"{name}.py").read_bytes())
    return digest.hexdigest()


def use_build(
    package_path: MutableSequence[str],
    build_dir: Path = BUILD_DIR,
    package_dir: Path = PACKAGE_DIR,
) -> bool:
    """Puts the build's modules before the source on `package_path` (the package's
    __path__) when the build matches the source; says whether it did."""
    setting = os.environ.get(SETTING, "")
    if setting == "0":
        return False
    digest_file = build_dir / DIGEST_FILE
    built_from = digest_file.read_text() if digest_file.is_file() else None
    if built_from is not None and built_from == source_digest(package_dir):
        package_path.insert(0, str(build_dir / "interceptors"))
        return True
    if setting == "1":
        state = "missing" if built_from is None else "older than the source"
        raise ImportError(
            f"{SETTING}=1, but the compiled interceptors in {build_dir} are {state}: run "
            f"`./dev` (or `python tools/compile_interceptors.py`), or unset {SETTING}"
        )
    return False


def in_use() -> bool:
    """Whether this process runs the compiled modules (for benchmarks to say so)."""
    import interceptors.chain

    return not (interceptors.chain.__file__ or "").endswith(".py")
