"""Where vlmtl's files live: the embedded models, the default configs and the user cache.

The models (``assets/``) and configs (``configs/``) sit at the top of the repository; pyproject.toml
ships them inside the package as ``vlmtl/assets`` and ``vlmtl/configs``, so an installed vlmtl
(``pip install .`` or a wheel) finds them through :mod:`importlib.resources` next to its code, and
an editable install or a bare checkout finds them at the top of the repository. Nothing here
touches the file system at import time, and this module imports nothing else of vlmtl.
"""

from __future__ import annotations

import os
import sys
from importlib.resources import files
from pathlib import Path

ASSETS_ENV = "VLMTL_ASSETS"
CACHE_ENV = "VLMTL_CACHE"
_CHECKOUT = Path(__file__).resolve().parents[1]  # the repository root when vlmtl runs from a checkout


def _package_data_dir(name: str) -> Path:
    """The data folder ``name`` (``assets``, ``configs``) of the installed package, else of the checkout.

    Installed, it is a real folder inside the package. Editable installs map the code only onto
    the repository (``vlmtl.assets`` has no ``__init__.py``, so it is not importable there and
    ``files("vlmtl.assets")`` fails), hence the repository root as the fallback.
    """
    installed = files("vlmtl") / name
    if isinstance(installed, Path) and installed.is_dir():  # not a zip import: a path others can open
        return installed
    return _CHECKOUT / name


def assets_dir() -> Path:
    """The embedded models' folder: ``$VLMTL_ASSETS`` if set, else the installed package data."""
    override = os.environ.get(ASSETS_ENV)
    if override:
        return Path(override).expanduser()
    return _package_data_dir("assets")


def asset(name: str) -> Path:
    """``assets_dir() / name``, or a FileNotFoundError that says how to get it."""
    path = assets_dir() / name
    if not path.exists():
        where = f"${ASSETS_ENV}" if os.environ.get(ASSETS_ENV) else "vlmtl's package data"
        raise FileNotFoundError(
            f"vlmtl asset {name!r} not found: {path} does not exist (looked in {where}). Set {ASSETS_ENV} to a "
            f"folder that holds {name!r}, or reinstall vlmtl (`pip install .` or its wheel), which ships the assets."
        )
    return path


def configs_dir() -> Path:
    """The default YAML configs' folder (installed package data)."""
    return _package_data_dir("configs")


def cache_dir() -> Path:
    """Where generated data sets go: ``$VLMTL_CACHE``, else the platform's user cache folder.

    Not created here: callers make it when they first write, so importing vlmtl writes nothing.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return _user_cache_root() / "vlmtl"


def _user_cache_root() -> Path:
    """The user cache root: ``$XDG_CACHE_HOME`` where set (absolute, as the spec requires), else the
    platform's convention (what platformdirs would say, without the dependency)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg)
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return Path(local) if local else Path.home() / "AppData" / "Local"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    return Path.home() / ".cache"
