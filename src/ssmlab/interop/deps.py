"""Lazy imports of the optional `hf` extra.

safetensors (reading / writing model.safetensors), tokenizers (tokenizer.json) and transformers
(only needed by users who run the exported directories, and by the equivalence tests) are not
core dependencies: importing ssmlab.interop never imports them, and a feature that needs one
that is missing raises a one-line UserError telling how to install it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ssmlab.errors import UserError

INSTALL_HINT = "pip install -e '.[hf]'"


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` or raise UserError("<purpose> needs <package>: pip install -e '.[hf]'")."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise UserError(f"{purpose} needs the optional package {package!r}: "
                        f"{INSTALL_HINT}") from None
