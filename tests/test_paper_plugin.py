"""A paper package outside ssmlab joins through the entry point group `ssmlab.papers`: the test
installs examples/example_paper (pip, offline, into a temporary folder) and finds its experiment in
`ssmlab list`, runs it, reproduces the paper and sees it in the report, like a built-in paper."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ssmlab

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "example_paper"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    # a copy, so that the build's egg-info never lands in the repository
    subprocess.run(["cp", "-r", str(EXAMPLE), str(build)], check=True)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        "--no-build-isolation", "--target", str(target),
                        str(build / EXAMPLE.name)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert list(target.glob("ssmlab_example_paper-*.dist-info"))
    return target


def ssmlab_cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    src = str(Path(ssmlab.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), src]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ssmlab.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_an_installed_paper_is_listed_run_and_reported(site, tmp_path):
    r = ssmlab_cli(site, "list", "example")
    assert r.returncode == 0, r.stderr
    assert "example/decay" in r.stdout and "ssmlab_example_paper" in r.stdout
    res = str(tmp_path / "res")
    r = ssmlab_cli(site, "run", "example/decay", "-e", "serial", "-q", "--results", res)
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout
    r = ssmlab_cli(site, "reproduce", "example", "-e", "serial", "-q", "--results", res)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "res" / "report" / "report.md").read_text()
    assert "| example | example/decay |" in md


def test_without_the_package_the_paper_is_unknown(tmp_path):
    r = ssmlab_cli(tmp_path, "list", "example")
    assert r.returncode == 2 and "unknown paper 'example'" in r.stderr
