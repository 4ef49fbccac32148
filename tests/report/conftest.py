"""tests/report/reportkit.py is importable as `reportkit` (pyproject's pythonpath does not list
this folder)."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
