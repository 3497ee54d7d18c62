"""The built wheel works on its own, outside the checkout: code, embedded models, configs, CLI.

Builds the wheel from a copy of the sources (so no build/ or egg-info lands in the checkout and
no stale build output slips in), installs it into a fresh virtual environment that sees this
environment's dependencies through a ``.pth`` path line (that does not run this environment's
own ``.pth`` files, so the editable vlmtl stays invisible), and runs everything from a folder
outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "vlmtl", "assets", "configs")  # what the build reads
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command; on failure, fail the test with its output (not a bare CalledProcessError)."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        command = " ".join(map(str, args))
        pytest.fail(f"{command} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _clean_env(tmp: Path) -> dict[str, str]:
    """This environment minus anything that would put the checkout or this venv first on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               VLMTL_CACHE=str(tmp / "cache"), MPLCONFIGDIR=str(tmp / "mpl"))
    env.pop("VLMTL_ASSETS", None)  # the wheel's own assets, not an override
    return env


def _copy_sources(dst: Path) -> Path:
    dst.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dst / name, ignore=IGNORE)
        else:
            shutil.copy2(ROOT / name, dst / name)
    return dst


def _build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    src = _copy_sources(tmp / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src],
         cwd=tmp, env=env)
    (wheel,) = (tmp / "dist").glob("vlmtl-*.whl")
    return wheel


def _fresh_venv(tmp: Path, env: dict[str, str]) -> Path:
    """A venv without pip or vlmtl whose python also sees this environment's site-packages."""
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp, env=env)
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp,
                        env=env).stdout.strip())
    ours = [sysconfig.get_path("purelib"), *site.getsitepackages()]
    (purelib / "_vlmtl_test_deps.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(ours)))
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(venv, a work folder outside the checkout, env) with the freshly built wheel installed."""
    tmp = tmp_path_factory.mktemp("install")
    env = _clean_env(tmp)
    wheel = _build_wheel(tmp, env)
    venv = _fresh_venv(tmp, env)
    # --ignore-installed: the editable vlmtl visible through the .pth is neither "satisfied" nor uninstalled.
    _run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", wheel],
         cwd=tmp, env=env)
    work = tmp / "work"
    work.mkdir()
    return venv, work, env


def _installed_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_wheel_holds_every_module_asset_and_config(installed: tuple[Path, Path, dict[str, str]]) -> None:
    venv, work, env = installed
    (pkg,) = venv.glob("lib/python*/site-packages/vlmtl")
    files = _installed_files(pkg)
    expected = {p for p in _installed_files(ROOT / "vlmtl") if p.endswith(".py")}
    expected |= {f"assets/{p}" for p in _installed_files(ROOT / "assets")}
    expected |= {f"configs/{p.relative_to(ROOT / 'configs')}" for p in (ROOT / "configs").rglob("*.yaml")}
    missing = sorted(expected - files)
    assert not missing, f"missing from the wheel (a package not listed in pyproject.toml?): {missing}"
    assert (venv / "bin" / "vlmtl-train-vl").exists() and (venv / "bin" / "vlmtl-train-dense").exists()


def test_installed_vlmtl_finds_its_assets_and_loads_default_clip(installed: tuple[Path, Path, dict[str, str]]) -> None:
    venv, work, env = installed
    probe = (
        "import json, vlmtl, vlmtl.paths, vlmtl.models\n"
        "model = vlmtl.models.create_multitask_clip()\n"
        "print(json.dumps({'file': vlmtl.__file__, 'clip': str(vlmtl.paths.asset('vlmtl-tiny-clip')),"
        " 'configs': str(vlmtl.paths.configs_dir()), 'model': type(model).__name__}))\n"
    )
    out = json.loads(_run([venv / "bin" / "python", "-c", probe], cwd=work, env=env).stdout.strip().splitlines()[-1])
    venv = venv.resolve()
    for key in ("file", "clip", "configs"):
        assert Path(out[key]).resolve().is_relative_to(venv), f"{key} comes from outside the fresh venv: {out[key]}"
    assert (Path(out["clip"]) / "open_clip_model.safetensors").is_file()
    assert (Path(out["configs"]) / "vl_default.yaml").is_file()
    assert out["model"] == "MultiTaskCLIP"


def test_installed_train_vl_cli_runs(installed: tuple[Path, Path, dict[str, str]]) -> None:
    venv, work, env = installed
    run = work / "run"
    _run([venv / "bin" / "python", "-m", "vlmtl.cli.train_vl", "--max-steps", "2", "--batch-size", "8",
          "--eval-max-samples", "8", "--workers", "0", "--output", run, "--data-root", work / "data"],
         cwd=work, env=env, timeout=180)
    assert (run / "metrics.json").is_file()
