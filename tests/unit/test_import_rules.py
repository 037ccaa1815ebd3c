"""The layout holds: nothing imports upwards or across, nothing in a circle; and the check
itself catches each kind of violation."""

from pathlib import Path

import pytest

from tests.import_rules import circles, violations

ROOT = Path(__file__).resolve().parents[2]


def test_no_module_imports_upwards_or_across() -> None:
    assert violations(ROOT) == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert circles(ROOT) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for package in ("interceptors", "services", "gateway"):
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent != root:
            (path.parent / "__init__.py").touch()
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "reported"),
    [
        (
            {"services/runtime/config.py": "from gateway.settings import GatewaySettings\n"},
            "services.runtime.config imports gateway.settings",
        ),
        (
            {"services/runtime/app.py": "def f():\n    from services.registry import X\n"},
            "services.runtime.app imports services.registry",
        ),
        (
            {
                "services/user/servicer.py": "from services.content import repository\n",
                "services/content/repository.py": "",
            },
            "services.user.servicer imports services.content.repository",
        ),
        (
            {"gateway/clients.py": "from services.runtime.clients import connect\n"},
            "gateway.clients imports services.runtime.clients",
        ),
        (
            {"interceptors/server/auth.py": "from interceptors.client import retry\n"},
            "interceptors.server.auth imports interceptors.client",
        ),
        (
            {"services/cli/main.py": "from tests.bench import rpc\n"},
            "services.cli.main imports tests.bench",
        ),
    ],
)
def test_an_upward_or_sideways_import_is_reported(
    tmp_path: Path, files: dict[str, str], reported: str
) -> None:
    found = violations(_tree(tmp_path, files))
    assert len(found) == 1
    assert found[0].endswith(reported)


def test_a_circle_is_reported_even_through_a_function_level_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "services/cli/main.py": "from services.cli import events\n",
            "services/cli/events.py": "def run():\n    from services.cli.main import x\n",
            "interceptors/server/chain.py": "from interceptors.server.status import code\n",
            "interceptors/server/status.py": "from .chain import Context\n",
        },
    )
    assert circles(root) == [
        ["interceptors.server.chain", "interceptors.server.status"],
        ["services.cli.events", "services.cli.main"],
    ]
