"""What a catalyst run leaves for people to read: the per-round history (JSON) and the mentor chat log (JSON Lines)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from peft_catalyst.records import History

HISTORY_FILE = "catalyst_history.json"


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN/inf: non-finite floats become None (their meaning is kept by a status field)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as JSON via a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite_or_none(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_history(output_dir: str | os.PathLike, history: History) -> Path:
    """Write ``catalyst_history.json``: the format version, the run summary and one record per round."""
    path = Path(output_dir) / HISTORY_FILE
    write_json_atomic(path, history.to_dict())
    return path


def read_history(path: str | os.PathLike) -> History:
    """Read a ``catalyst_history.json`` (a file or the directory holding it), of this or an earlier format."""
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_FILE
    return History.from_dict(json.loads(path.read_text(encoding="utf-8")))


class ChatLog:
    """Append-only JSON Lines log of mentor exchanges; ``truncate_after(step)`` drops entries a resume will redo."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, entry: dict[str, Any]) -> None:
        """Add one exchange (messages sent, reply, usage or error)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(_finite_or_none(entry), ensure_ascii=False) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        """All entries, in order."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Keep only the entries of rounds at or before optimizer step ``step``."""
        if not self.path.exists():
            return
        kept = [e for e in self.entries() if e.get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in kept), encoding="utf-8")
        os.replace(tmp, self.path)
