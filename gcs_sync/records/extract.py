"""Placeholder until the real module lands (branch i11-extract)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional


class DistributionError(ValueError):
    def __init__(self, filename: str, problem: str) -> None:
        self.filename = filename
        self.problem = problem
        super().__init__(f"{filename}: {problem}")


@dataclasses.dataclass(frozen=True)
class CoreMetadata:
    data: bytes
    sha256: str
    name: str
    version: str
    requires_python: Optional[str]
    servable: bool


def read_core_metadata(path: Path, filename: str) -> Optional[CoreMetadata]:
    raise NotImplementedError
