"""Where the installed tree keeps its Java parts, and which java runs them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.errors import StackError

if TYPE_CHECKING:
    from schemas.config import TallyConfig

# The checkout (or installed source tree) that holds infra/, jobs/ and the packages.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def lib_dir(cfg: TallyConfig) -> Path:
    """The Java parts (connector jars, Kafka, HBase): stack.lib_dir, else infra/lib."""
    return Path(cfg.stack.lib_dir).resolve() if cfg.stack.lib_dir else PROJECT_ROOT / "infra" / "lib"


def java_bin() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise StackError("java: not found; install OpenJDK 17 (make setup does)")
    return found
