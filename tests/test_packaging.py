"""A non-editable install ships the config tree and works from any folder."""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_wheel_install_works_outside_the_repository(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO),
                    "-w", str(wheels)], check=True, capture_output=True, cwd=tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    _borrow_dependencies(python)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    *map(str, wheels.glob("*.whl"))], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import dlrun.config.paths as p; print(p.PACKAGE_CONF)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(venv)), where
    config = subprocess.run([str(venv / "bin" / "dlrun"), "train", "--cfg", "model=mlp"], cwd=elsewhere,
                            capture_output=True, text=True)
    assert config.returncode == 0, config.stderr
    assert yaml.safe_load(config.stdout)["model"]["depth"] == 2
    listing = subprocess.run([str(venv / "bin" / "dlrun"), "configs", "data"], cwd=elsewhere,
                             capture_output=True, text=True)
    assert "digits" in listing.stdout and "diabetes" in listing.stdout


def _borrow_dependencies(python: Path) -> None:
    """Let the test's venv import torch and the rest from the environment running the suite (a venv
    or not): its site-packages go on the new venv's path through a .pth file, after the venv's own,
    so the wheel installed there wins. Listed plainly, their own .pth files are not run, so an
    editable install of dlrun in the running environment stays invisible."""
    target = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(target, "dependencies-of-the-suite.pth").write_text("".join(f"{path}\n" for path in ours if Path(path).is_dir()))


def test_the_wheel_holds_every_module_and_the_shipped_files(tmp_path):
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO),
                    "-w", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(REPO)) for p in (REPO / "dlrun").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    shipped = {f"dlrun/sweeps/{p.name}" for p in (REPO / "sweeps").glob("*.yaml")}
    shipped |= {f"dlrun/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)
