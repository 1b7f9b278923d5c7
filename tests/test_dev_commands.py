"""The README's development commands run as written, and `make pytest` ignores a deployment's `.env`.

Both run in a copy of the repository (its tracked files, with the shared ``.venv`` linked in),
so the checkout's own ``var/`` and ``.env`` are never touched. ``make -o .venv/.installed-stamp``
treats the virtual environment as built: nothing is installed by these tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None or shutil.which("git") is None, reason="needs make and git")

# A test the copied suite runs: it fails unless the test settings, not the .env's, are in force.
PROBE = """
from django.conf import settings


def test_it_runs_on_the_test_settings():
    assert settings.REKINDLE_ENGINE == "local"
    assert settings.EMAIL_BACKEND == "django.core.mail.backends.locmem.EmailBackend"
    assert not settings.COMFYUI_URLS
    assert settings.SECRET_KEY.startswith("test-secret-key")
"""


def _copy_repository(target: Path) -> Path:
    """The tracked files of the checkout (with their mtimes) in ``target``, and ``.venv`` linked."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        name = raw.decode()
        source = ROOT / name
        if not source.is_file():
            continue
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    (target / ".venv").symlink_to((ROOT / ".venv").resolve())
    return target


def _bare_environment() -> dict[str, str]:
    """What a developer's fresh shell has: no Django settings of ours."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}


def readme_development_commands() -> list[str]:
    """Every ``DEBUG=true .venv/bin/python manage.py ...`` command the README shows, once each."""
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"`(DEBUG=true \.venv/bin/python manage\.py [^`]+)`", text.replace("\n", " "))
    return list(dict.fromkeys(found))


def test_it_finds_the_readme_development_commands() -> None:
    commands = readme_development_commands()
    assert "DEBUG=true .venv/bin/python manage.py restore_photo old.jpg --out restored.jpg" in commands


def test_it_runs_the_readme_development_commands_as_written(tmp_path: Path) -> None:
    copy = _copy_repository(tmp_path / "clone")
    env = _bare_environment()
    setup = subprocess.run(
        [MAKE or "make", "-o", ".venv/.installed-stamp", "setup"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    Image.new("RGB", (160, 120), (120, 100, 80)).save(copy / "old.jpg")
    for command in readme_development_commands():
        done = subprocess.run(["bash", "-c", command], cwd=copy, env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    with Image.open(copy / "restored.jpg") as restored:
        assert restored.size[0] > 0


def test_it_runs_make_pytest_with_a_production_env_file(tmp_path: Path) -> None:
    """`.env.example` holds a deployment's settings (comfyui engine, SMTP, S3): `make pytest` must not see them."""
    copy = _copy_repository(tmp_path / "clone")
    shutil.copy(ROOT / ".env.example", copy / ".env")
    (copy / "tests" / "test_env_probe.py").write_text(PROBE)
    env = {**_bare_environment(), "CI": os.environ.get("CI", "")}
    done = subprocess.run(
        [
            MAKE or "make",
            "-o",
            ".venv/.installed-stamp",
            "pytest",
            "PYTEST_ARGS=-n 0 -p no:cacheprovider -q tests/test_env_probe.py",
        ],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
