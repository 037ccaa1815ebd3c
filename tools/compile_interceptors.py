"""Compiles the server chain's modules with mypyc into build/mypyc (see interceptors.compiled).

    python tools/compile_interceptors.py [--force]

Does nothing when the build matches the source (`./dev` runs it every time). Exits 0 when
the build is ready, 3 when it could not be made (no C compiler, say): Nova then runs
those modules as plain Python, which behaves the same and costs more CPU per call.
mypyc comes with mypy, a pinned dev dependency; the build needs a C compiler and
setuptools.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

from interceptors.compiled import BUILD_DIR, DIGEST_FILE, MODULES, PACKAGE_DIR, source_digest

ROOT = PACKAGE_DIR.parent
_WORK_DIR = ROOT / "build" / "mypyc-work"
"""Generated C and object files."""
_FAILED_FILE = ROOT / "build" / "mypyc-failed"
"""The digest of a source that did not compile: not tried again without --force, so a
machine without a C compiler does not pay for the attempt on every `./dev`."""
NOT_BUILT = 3


def build(force: bool = False) -> bool:
    """Makes the build unless it matches the source; whether a matching build exists."""
    digest = source_digest()
    digest_file = BUILD_DIR / DIGEST_FILE
    if not force and digest_file.is_file() and digest_file.read_text() == digest:
        return True
    if not force and _FAILED_FILE.is_file() and _FAILED_FILE.read_text() == digest:
        print(
            "dev: the interceptors run as plain Python (they did not compile; "
            "`python tools/compile_interceptors.py --force` tries again)",
            file=sys.stderr,
        )
        return False
    print("dev: compiling the server chain with mypyc…", file=sys.stderr)
    shutil.rmtree(BUILD_DIR, ignore_errors=True)  # no module of an older build may linger
    shutil.rmtree(_WORK_DIR, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, __file__, "--setup"], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        shutil.rmtree(BUILD_DIR, ignore_errors=True)
        output = (done.stdout + done.stderr).strip().splitlines()
        print("\n".join(output[-15:]), file=sys.stderr)
        print(
            "dev: the interceptors could not be compiled (above); they run as plain Python",
            file=sys.stderr,
        )
        _FAILED_FILE.write_text(digest)
        return False
    digest_file.write_text(digest)  # last: a build without it is never used
    _FAILED_FILE.unlink(missing_ok=True)
    return True


def _setup() -> None:
    """setuptools' build_ext of the mypyc extensions, in a process of its own."""
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped]  # no stubs, one call

    extensions = mypycify(
        [f"interceptors/{name}.py" for name in MODULES],
        group_name="interceptors._compiled",
        target_dir=str(_WORK_DIR / "c"),
    )
    setup(
        name="nova-compiled-interceptors",
        packages=[],
        py_modules=[],
        ext_modules=extensions,
        script_args=[
            "--quiet",
            "build_ext",
            f"--build-lib={BUILD_DIR}",
            f"--build-temp={_WORK_DIR / 'objects'}",
        ],
    )


if __name__ == "__main__":
    if "--setup" in sys.argv:
        _setup()
    else:
        sys.exit(0 if build(force="--force" in sys.argv) else NOT_BUILT)
