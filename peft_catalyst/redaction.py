"""What is published carries no credential: text and JSON made safe for a model card or an uploaded history.

Built on the mentors' own :func:`~peft_catalyst.mentors.base.scrub_secrets` and
:func:`~peft_catalyst.mentors.base.redact_url`; the model card and the Hub upload use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from peft_catalyst.mentors.base import redact_url, scrub_secrets

__all__ = ["public_obj", "public_text"]

_URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}`|]+")
_USERINFO_RE = re.compile(r"[^\s/@:'\"`]+:[^\s/@'\"`]+@(?=[\w.-])")  # "user:pass@" without a scheme


def public_text(text: Any, secrets: Iterable[str | None] = ()) -> str:
    """``text`` made safe to publish: the given secrets and key-shaped strings masked, URLs without user info/query.

    Why: mentor names, errors and replies end up in the card and the uploaded history; a base URL such as
    ``http://user:pass@host/v1?key=...`` or an echoed API key must never reach the Hub.
    """
    text = scrub_secrets(str(text), [s for s in secrets if s], patterns=False)
    text = _URL_RE.sub(lambda m: redact_url(m.group(0)) or "", text)
    text = _USERINFO_RE.sub("***@", text)
    return scrub_secrets(text, patterns=True)


def public_obj(obj: Any, secrets: Sequence[str | None]) -> Any:
    """Every string inside ``obj`` (dicts, lists) passed through :func:`public_text`."""
    if isinstance(obj, str):
        return public_text(obj, secrets)
    if isinstance(obj, Mapping):
        return {str(k): public_obj(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [public_obj(v, secrets) for v in obj]
    return obj
