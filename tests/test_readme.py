"""The README's API example must run as written (docs kept true)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_setup_commands():
    block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.strip()]
    assert commands == ["make reproduce", "make test"]


def test_readme_python_example_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    assert scope["y"].shape == (2, 8, 100)
    assert scope["M"].shape[-2:] == (50, 50)
    out = scope["clf"](scope["torch"].randint(0, 16, (2, 30)))
    assert out.shape == (2, 10)
