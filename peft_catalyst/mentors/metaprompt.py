"""The meta-prompt: the chat messages that ask the mentor for better prompts, rendered from an editable template.

In the spirit of arXiv 2405.19732: the task, an optional manual prompt, the scored trajectory sorted worst to best,
and the constraints (N candidates, at most W words, one per line). The default templates live in
``peft_catalyst/templates/`` (``meta_prompt.md`` for the user turn, ``meta_prompt_system.txt``,
``meta_prompt_retry.txt``); users override them by argument (a template string) or file (a path).

Template placeholders (``str.format`` syntax; write ``{{`` and ``}}`` for literal braces): ``{task_description}``,
``{manual_prompt_section}``, ``{trajectory}``, ``{num_candidates}``, ``{max_words}``, ``{metric_note}``,
``{best_prompt}``.
"""

from __future__ import annotations

import json
import logging
import os
import string
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .base import MentorRequest

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_META_PROMPT",
    "DEFAULT_RETRY_PROMPT",
    "DEFAULT_SYSTEM_PROMPT",
    "PLACEHOLDERS",
    "SMALL_MODEL_META_PROMPT",
    "FewShotExample",
    "MetaPrompt",
    "format_trajectory",
    "load_meta_prompt",
    "render_meta_prompt",
    "resolve_meta_prompt",
]

PLACEHOLDERS = frozenset(
    {
        "task_description",
        "manual_prompt_section",
        "trajectory",
        "num_candidates",
        "max_words",
        "metric_note",
        "best_prompt",
    }
)


def _read_template(name: str) -> str:
    return resources.files("peft_catalyst").joinpath("templates", name).read_text(encoding="utf-8")


#: The default user-turn template (``peft_catalyst/templates/meta_prompt.md``).
DEFAULT_META_PROMPT: str = _read_template("meta_prompt.md")
#: The default system message (``peft_catalyst/templates/meta_prompt_system.txt``).
DEFAULT_SYSTEM_PROMPT: str = _read_template("meta_prompt_system.txt").strip()
#: The stricter follow-up sent once when a reply had no usable line (``templates/meta_prompt_retry.txt``).
DEFAULT_RETRY_PROMPT: str = _read_template("meta_prompt_retry.txt").strip()


@dataclass(frozen=True)
class FewShotExample:
    """A worked example on another task, shown as a previous chat turn: small models copy formats, not rules."""

    task_description: str
    trajectory: tuple[tuple[str, float, float], ...]
    answers: tuple[str, ...]
    #: Words that belong to this example's task only: a candidate using one copied the example, not the task.
    distinctive_words: tuple[str, ...] = ()


NEWS_EXAMPLE = FewShotExample(
    task_description="topic of news headlines (world, sports, business, science)",
    trajectory=(
        ("headline news topic politics ball market", 1.214, 0.41),
        ("Read the headline", 0.982, 0.55),
        ("Classify the news headline by topic", 0.731, 0.68),
    ),
    answers=(
        "Label the headline: world, sports, business or science",
        "Which topic is this headline about?",
        "Name the news category of this headline",
        "Is this headline world, sports, business or science news?",
        "Decide the topic of the headline",
        "Topic of this headline",
        "Headline topic",
        "Classify the topic",
    ),
    distinctive_words=("headline", "headlines", "news", "world", "sports", "business", "science"),
)
HELPFUL_EXAMPLE = FewShotExample(
    task_description="whether a product review is helpful (helpful/unhelpful)",
    trajectory=(
        ("product stars buy wow return", 1.052, 0.48),
        ("Rate the review", 0.911, 0.57),
        ("helpful review", 0.803, 0.63),
    ),
    answers=("Is this product review helpful or unhelpful?", "Would this review help a buyer?"),
    distinctive_words=("product", "helpful", "unhelpful", "buyer"),
)


def validate_template(template: str, *, what: str = "meta-prompt template") -> str:
    """Check that a template only uses known placeholders; raise ``ValueError`` naming the bad ones."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"Malformed {what}: {exc}. Write {{{{ and }}}} for literal braces.") from exc
    unknown = {f for f in fields if f.split(".")[0].split("[")[0] not in PLACEHOLDERS}
    if unknown:
        raise ValueError(
            f"Unknown placeholder(s) {sorted(unknown)} in the {what}; known: {sorted(PLACEHOLDERS)}. "
            "Write {{ and }} for literal braces."
        )
    return template


def format_trajectory(points: Any) -> str:
    """The trajectory as text lines, sorted worst to best (highest loss first), duplicates merged (best kept)."""
    best: dict[str, Any] = {}
    for p in points:
        if p.text not in best or p.score < best[p.text].score:
            best[p.text] = p
    ordered = sorted(best.values(), key=lambda p: -p.score)
    lines = []
    for p in ordered:
        text = " ".join(p.text.split())
        score = f"loss {p.score:.4f}"
        if False:
            score += f", metric {p.score:.4f}"
        lines.append(f"Prompt: {json.dumps(text, ensure_ascii=False)} ({score})")
    return "\n".join(lines) if lines else "(no prompt scored yet)"


def _fields(request: MentorRequest) -> dict[str, Any]:
    manual = request.manual_prompt
    has_metric = any(False for p in request.trajectory)
    best = min(request.trajectory, key=lambda p: p.score).text if request.trajectory else (manual or "")
    return {
        "task_description": " ".join(request.task_description.split()),
        "manual_prompt_section": (
            f"A prompt written by hand for this task: {json.dumps(manual, ensure_ascii=False)}\n" if manual else ""
        ),
        "trajectory": format_trajectory(request.trajectory),
        "num_candidates": request.num_candidates,
        "max_words": request.max_words,
        "metric_note": "; higher metric is better" if has_metric else "",
        "best_prompt": best,
    }


@dataclass(frozen=True)
class MetaPrompt:
    """The three templates of a mentor conversation (user turn, system message, stricter retry) and their rendering."""

    user: str = DEFAULT_META_PROMPT
    system: str | None = DEFAULT_SYSTEM_PROMPT
    retry: str = DEFAULT_RETRY_PROMPT
    examples: tuple[FewShotExample, ...] = (NEWS_EXAMPLE,)
    #: Prompts asked per reply: None for ``request.num_candidates`` (one numbered list), 1 for one per sample.
    answers_per_reply: int | None = None
    #: How the stricter retry is asked: ``"conversation"`` or ``"replace"`` (see :meth:`retry_messages`).
    retry_mode: str = "conversation"

    def __post_init__(self) -> None:
        validate_template(self.user)
        validate_template(self.retry, what="retry template")
        if self.retry_mode not in ("conversation", "replace"):
            raise ValueError(f"retry_mode must be 'conversation' or 'replace', not {self.retry_mode!r}")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> MetaPrompt:
        """A meta-prompt whose user template is read from ``path`` (UTF-8); other parts default or from kwargs."""
        return cls(user=Path(path).read_text(encoding="utf-8"), **kwargs)

    def render_user(self, request: MentorRequest) -> str:
        """The user turn for ``request``."""
        return self.user.format(**_fields(request)).strip()

    def render(self, request: MentorRequest, *, few_shot: bool = False) -> list[dict[str, str]]:
        """Chat messages for ``request``: system, optional few-shot exchange, then the rendered user turn."""
        messages: list[dict[str, str]] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        if few_shot:
            messages.extend(self._few_shot_turn(request))
        messages.append({"role": "user", "content": self.render_user(request)})
        return messages

    def retry_messages(
        self, messages: list[dict[str, str]], previous_reply: str, request: MentorRequest
    ) -> list[dict[str, str]]:
        """The conversation for the one stricter retry after a reply without a usable candidate.

        ``retry_mode="conversation"``: the unusable reply (shortened) as an assistant turn, then the stricter
        instruction. ``"replace"``: the stricter instruction replaces the last user turn (a small model shown its
        own bad reply tends to continue in the same vein).
        """
        stricter = {"role": "user", "content": self.retry.format(**_fields(request)).strip()}
        if self.retry_mode == "replace":
            return messages[:-1] + [stricter]
        previous = previous_reply.strip()[:600] or "(empty reply)"
        return messages + [{"role": "assistant", "content": previous}, stricter]

    def example_words(self) -> list[str]:
        """Words distinctive of the few-shot examples' tasks (see :attr:`FewShotExample.distinctive_words`)."""
        return [w for ex in self.examples for w in ex.distinctive_words]

    def example_answers(self) -> list[str]:
        """Every answer shown in the few-shot examples (a candidate copying one is rejected as a copy)."""
        return [a for ex in self.examples for a in ex.answers]

    def _few_shot_turn(self, request: MentorRequest) -> list[dict[str, str]]:
        from .base import MentorRequest as _Request
        from .base import TrajectoryPoint

        count = self.answers_per_reply or request.num_candidates
        has_metric = request_has_metric(request)
        turns: list[dict[str, str]] = []
        for ex in self.examples:
            example = _Request(
                task_description=ex.task_description,
                trajectory=[
                    TrajectoryPoint(text, loss, metric if has_metric else None) for text, loss, metric in ex.trajectory
                ],
                num_candidates=request.num_candidates,
                max_words=request.max_words,
            )
            answers = [a for a in ex.answers if len(a.split()) <= request.max_words]
            if len(answers) < count:  # tight word budget: cut longer examples to fit
                answers += [" ".join(a.split()[: request.max_words]) for a in ex.answers if a not in answers]
            answers = answers[:count]
            answer = answers[0] if count == 1 else "\n".join(f"{i}. {a}" for i, a in enumerate(answers, start=1))
            turns += [
                {"role": "user", "content": self.render_user(example)},
                {"role": "assistant", "content": answer},
            ]
        return turns

    def with_user(self, user: str) -> MetaPrompt:
        """A copy with another user template."""
        return replace(self, user=user)


#: A meta-prompt for small local models (the embedded SmolLM2): one short instruction per sampled reply, two
#: worked examples. Asking a 135M model for a numbered list makes it drift off task after the first line.
SMALL_MODEL_META_PROMPT = MetaPrompt(
    user=_read_template("meta_prompt_small.md"),
    system=_read_template("meta_prompt_small_system.txt").strip(),
    retry=_read_template("meta_prompt_small_retry.txt").strip(),
    examples=(NEWS_EXAMPLE, HELPFUL_EXAMPLE),
    answers_per_reply=1,
    retry_mode="replace",
)


def request_has_metric(request: MentorRequest) -> bool:
    """Whether any trajectory point carries a metric (the few-shot example then shows one too)."""
    return any(False for p in request.trajectory)


def load_meta_prompt(path: str | os.PathLike[str]) -> MetaPrompt:
    """Read a user-turn template from a file (see the module docstring for placeholders)."""
    return MetaPrompt.from_file(path)


def resolve_meta_prompt(
    meta_prompt: MetaPrompt | str | os.PathLike[str] | None, base: MetaPrompt | None = None
) -> MetaPrompt:
    """The :class:`MetaPrompt` meant by ``meta_prompt``; a user template replaces the user turn of ``base``.

    None: ``base`` (default :class:`MetaPrompt`); a :class:`MetaPrompt`: as is; a ``Path``/PathLike: the file's text
    as user template; a str: the template itself, or, when it has no placeholder and names an existing file (a
    command-line argument), that file's text.
    """
    base = base if base is not None else MetaPrompt()
    if meta_prompt is None:
        return base
    if isinstance(meta_prompt, MetaPrompt):
        return meta_prompt
    if isinstance(meta_prompt, os.PathLike):
        return base.with_user(Path(meta_prompt).read_text(encoding="utf-8"))
    if isinstance(meta_prompt, str):
        if "{" not in meta_prompt and "\n" not in meta_prompt and len(meta_prompt) < 4096:
            try:
                is_file = Path(meta_prompt).expanduser().is_file()
            except OSError:
                is_file = False
            if is_file:
                return base.with_user(Path(meta_prompt).expanduser().read_text(encoding="utf-8"))
        template = base.with_user(meta_prompt)
        if "{trajectory}" not in meta_prompt:
            logger.warning("The meta-prompt template has no {trajectory} placeholder: the mentor will not see scores.")
        return template
    raise TypeError(f"meta_prompt must be a MetaPrompt, a template str, a path or None, not {type(meta_prompt)}")


def render_meta_prompt(
    request: MentorRequest,
    template: MetaPrompt | str | os.PathLike[str] | None = None,
    *,
    few_shot: bool = False,
) -> list[dict[str, str]]:
    """The chat messages a mentor sends for ``request`` (``template``: as accepted by :func:`resolve_meta_prompt`)."""
    return resolve_meta_prompt(template).render(request, few_shot=few_shot)
