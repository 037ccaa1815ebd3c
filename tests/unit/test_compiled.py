"""The compiled server chain is used exactly when it was built from the source as it is: an
edit takes effect at once (as plain Python), NOVA_COMPILED=0 opts out, and NOVA_COMPILED=1
(set by `./dev test` once the build succeeded) refuses to run without it."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import pytest

from interceptors import compiled


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A copy of the compiled modules' source."""
    package = tmp_path / "source"
    package.mkdir()
    for name in compiled.MODULES:
        shutil.copy(compiled.PACKAGE_DIR / f"{name}.py", package)
    return package


def build_of(package: Path, root: Path) -> Path:
    """A build directory whose digest says it was made from `package` as it is now."""
    (root / "interceptors").mkdir(parents=True)
    (root / compiled.DIGEST_FILE).write_text(compiled.source_digest(package))
    return root


def test_the_digest_follows_every_compiled_modules_source(package: Path) -> None:
    before = compiled.source_digest(package)
    assert compiled.source_digest(package) == before
    for name in compiled.MODULES:
        source = package / f"{name}.py"
        text = source.read_text()
        source.write_text(text + "\n# edited\n")
        assert compiled.source_digest(package) != before, name
        source.write_text(text)
    assert compiled.source_digest(package) == before


def test_a_build_of_the_current_source_goes_first_on_the_package_path(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(compiled.SETTING, raising=False)
    build = build_of(package, tmp_path / "build")
    path = ["source"]
    assert compiled.use_build(path, build, package)
    assert path == [str(build / "interceptors"), "source"]


def test_a_build_of_older_source_is_not_used(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(compiled.SETTING, raising=False)
    build = build_of(package, tmp_path / "build")
    chain = package / "chain.py"
    chain.write_text(chain.read_text() + "\n# edited after the build\n")
    path = ["source"]
    assert not compiled.use_build(path, build, package)
    assert path == ["source"]
    assert not compiled.use_build(path, tmp_path / "no build", package)
    assert path == ["source"]


def test_nova_compiled_0_runs_plain_python_even_with_a_fresh_build(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(compiled.SETTING, "0")
    build = build_of(package, tmp_path / "build")
    path = ["source"]
    assert not compiled.use_build(path, build, package)
    assert path == ["source"]


def test_nova_compiled_1_refuses_a_missing_or_stale_build(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(compiled.SETTING, "1")
    with pytest.raises(ImportError, match="are missing: run `"):
        compiled.use_build([], tmp_path / "no build", package)
    build = build_of(package, tmp_path / "build")
    (package / "auth.py").write_text("# edited after the build\n")
    with pytest.raises(ImportError, match="older than the source"):
        compiled.use_build([], build, package)


def test_this_process_runs_all_compiled_modules_or_none_as_the_build_says() -> None:
    digest_file = compiled.BUILD_DIR / compiled.DIGEST_FILE
    fresh = digest_file.is_file() and digest_file.read_text() == compiled.source_digest()
    expected = fresh and os.environ.get(compiled.SETTING) != "0"
    if os.environ.get(compiled.SETTING) == "1":
        assert expected, "./dev test runs the suite against the compiled modules"
    assert compiled.in_use() == expected
    for name in compiled.MODULES:
        module = importlib.import_module(f"interceptors.{name}")
        where = Path(module.__file__ or "")
        assert where.is_relative_to(compiled.BUILD_DIR) == expected, where
        assert (where.suffix == ".py") != expected, where
