"""Typed reads of NOVA_* variables; each failure names the variable and what it accepts."""

from collections.abc import Mapping
from pathlib import Path


class ConfigError(ValueError):
    """A NOVA_* variable holds something Nova cannot use."""


class EnvReader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def optional(self, name: str, *, minimum_length: int = 1) -> str | None:
        value = self._env.get(name, "").strip()
        if not value:
            return None
        if len(value) < minimum_length:
            raise ConfigError(
                f"{name} must be at least {minimum_length} characters long, got {len(value)}"
            )
        return value

    def text(self, name: str, default: str) -> str:
        return self._env.get(name, "").strip() or default

    def number(self, name: str, default: int, low: int, high: int) -> int:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ConfigError(f"{name} must be a whole number from {low} to {high}; got {raw!r}")
        return value

    def choice(self, name: str, default: str, options: tuple[str, ...], upper: bool = False) -> str:
        value = self.text(name, default)
        value = value.upper() if upper else value
        if value not in options:
            raise ConfigError(f"{name} must be one of {', '.join(options)}; got {value!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self._env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "on", "yes"):
            return True
        if raw in ("0", "false", "off", "no"):
            return False
        raise ConfigError(f"{name} must be on or off (1/0, true/false); got {raw!r}")

    def optional_flag(self, name: str) -> bool | None:
        return self.flag(name, False) if self._env.get(name, "").strip() else None

    def seconds_from_ms(self, name: str, default_ms: int, low_ms: int, high_ms: int) -> float:
        return self.number(name, default_ms, low_ms, high_ms) / 1000

    def existing_file(self, name: str) -> Path | None:
        raw = self._env.get(name, "").strip()
        if not raw:
            return None
        path = Path(raw)
        if not path.is_file():
            raise ConfigError(f"{name} must name an existing file; {raw!r} is not one")
        return path
