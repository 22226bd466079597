"""`make test`, the README's test command, installs the system packages the tests need first."""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_make_test_installs_system_packages_before_running_pytest():
    plan = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert ".ci/system-deps" in plan and plan.index(".ci/system-deps") < plan.index("pytest")
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_system_deps_without_apt_stops_naming_the_install_command(tmp_path):
    # A PATH with a shell and `id` only: no bwrap, no chromium, no apt-get, no sudo.
    for tool in ("bash", "id"):
        (tmp_path / tool).symlink_to(shutil.which(tool))
    proc = subprocess.run([shutil.which("make"), "-s", "system-deps"], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": str(tmp_path), "HOME": os.environ.get("HOME", "/")})
    assert proc.returncode != 0
    assert "install them with `sudo apt-get install -y bubblewrap chromium`" in proc.stderr
