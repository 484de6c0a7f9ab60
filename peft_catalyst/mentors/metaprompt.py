"""The meta-prompt: the chat messages that ask the mentor for better prompts, rendered from an editable template.

In the spirit of arXiv 2405.19732: the task, an optional manual prompt, the scored trajectory sorted worst to best
by the ranking metric (in its direction), the earlier rounds' outcomes, and the constraints (N candidates, at most W
words, one per line). The default templates live in
``peft_catalyst/templates/`` (``meta_prompt.md`` for the user turn, ``meta_prompt_system.txt``,
``meta_prompt_retry.txt``); users override them by argument (a template string) or file (a path).

Template placeholders (``str.format`` syntax; write ``{{`` and ``}}`` for literal braces): ``{task_description}``,
``{manual_prompt_section}``, ``{trajectory}``, ``{num_candidates}``, ``{max_words}``, ``{metric_note}``,
``{best_prompt}``, ``{metric}`` (the ranking metric's name), ``{direction}`` (e.g. "lower label_loss is better"),
``{earlier_rounds}`` (a short section on the earlier rounds, empty in the first round). ``{metric_note}`` is kept for
older templates: empty when the metric is ``loss``, else "; " and the direction.

The evidence (each a section ending in a newline, empty when the request has none): ``{labels}`` (the label words
the doer answers with), ``{examples}`` (labelled catalyst examples), ``{errors}`` (examples the current prompt gets
wrong, true and predicted label), ``{best_prompts}`` (the best prompts scored so far) and ``{proposal_instruction}``
(empty for ``proposal="new"``; for ``"edit"`` the request to rewrite the best prompt so that it fixes the errors).
A template without them still works; it only shows the mentor less.
"""

from __future__ import annotations

import json
import logging
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from peft_catalyst.records import is_better, ranking_key

from .base import LabeledExample, MentorRequest, PastRound, ScoredPrompt

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_META_PROMPT",
    "DEFAULT_RETRY_PROMPT",
    "DEFAULT_SYSTEM_PROMPT",
    "PLACEHOLDERS",
    "SMALL_MODEL_META_PROMPT",
    "FewShotExample",
    "MetaPrompt",
    "direction_sentence",
    "format_earlier_rounds",
    "format_evidence",
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
        "metric",
        "direction",
        "earlier_rounds",
        "labels",
        "examples",
        "errors",
        "best_prompts",
        "proposal_instruction",
    }
)

#: Most earlier rounds shown in the meta-prompt (the latest ones): enough to learn from, short enough for small models.
MAX_EARLIER_ROUNDS = 5


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
    #: ``(text, loss, accuracy)`` per prompt, worst to best.
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


def direction_sentence(metric: str = "loss", higher_is_better: bool = False) -> str:
    """Which way ``metric`` improves, e.g. ``"lower label_loss is better"``: what the mentor must aim for."""
    return f"{'higher' if higher_is_better else 'lower'} {metric} is better"


def format_trajectory(points: Sequence[ScoredPrompt], metric: str = "loss", higher_is_better: bool = False) -> str:
    """The trajectory as text lines under the metric's name, worst to best in its direction, duplicates merged."""
    best: dict[str, ScoredPrompt] = {}
    for p in points:
        if p.text not in best or is_better(p.score, best[p.text].score, higher_is_better):
            best[p.text] = p
    ordered = sorted(best.values(), key=lambda p: ranking_key(p.score, higher_is_better), reverse=True)
    lines = [f"Prompt: {_quoted(p.text)} ({metric} {p.score:.4f})" for p in ordered]
    return "\n".join(lines) if lines else "(no prompt scored yet)"


def format_earlier_rounds(rounds: Sequence[PastRound], metric: str = "loss", limit: int = MAX_EARLIER_ROUNDS) -> str:
    """The latest ``limit`` earlier rounds, one line each: the incumbent's score, what was proposed and taken."""
    lines = []
    for r in list(rounds)[-limit:] if limit > 0 else []:
        current = "unscored" if r.current_score is None else f"{r.current_score:.4f}"
        proposed = ", ".join(
            f"{_quoted(t)} ({'not scored' if s is None else f'{s:.4f}'})" for t, s in zip(r.proposed, r.scores)
        )
        outcome = f"took {_quoted(r.taken)}" if r.taken is not None else "kept the current prompt"
        lines.append(f"Round {r.round}: current prompt {current}; proposed {proposed or 'nothing'}; {outcome}.")
    if not lines:
        return ""
    return f"Earlier rounds ({metric} of each prompt):\n" + "\n".join(lines) + "\n"


def format_evidence(request: MentorRequest) -> dict[str, str]:
    """The request's evidence as template sections (``labels``, ``examples``, ``errors``, ``best_prompts``,
    ``proposal_instruction``), each empty when the request has none."""
    labels = request.labels
    sections = {"labels": "", "examples": "", "errors": "", "best_prompts": "", "proposal_instruction": ""}
    if labels:
        names = ", ".join(map(_quoted, labels))
        sections["labels"] = f"The model must answer with one of these labels: {names}\n"
    if request.examples:
        lines = [f"- {_example_text(e)} -> {e.label}" for e in request.examples]
        sections["examples"] = "Examples from the task (text -> label):\n" + "\n".join(lines) + "\n"
    if request.errors:
        lines = [f"- {_example_text(e)} -> true: {e.label}, predicted: {e.predicted}" for e in request.errors]
        sections["errors"] = "Examples the current prompt gets wrong:\n" + "\n".join(lines) + "\n"
    if request.best_prompts:
        lines = [f"- {_quoted(p.text)} ({request.metric} {p.score:.4f})" for p in request.best_prompts]
        sections["best_prompts"] = f"Best prompts so far ({request.metric}):\n" + "\n".join(lines) + "\n"
    if request.proposal == "edit":
        best = request.best_prompts[0].text if request.best_prompts else (request.manual_prompt or "")
        fix = " so that it fixes the errors shown" if request.errors else ""
        sections["proposal_instruction"] = (
            f"Edit the best prompt so far, {_quoted(best)}{fix}: keep what works, change what the errors show.\n"
        )
    return sections


def _example_text(example: LabeledExample) -> str:
    return _quoted(example.text + (" ..." if example.cut else ""))


def _quoted(text: str) -> str:
    return json.dumps(" ".join(text.split()), ensure_ascii=False)


def _fields(request: MentorRequest) -> dict[str, Any]:
    manual = request.manual_prompt
    higher = request.higher_is_better
    best = request.trajectory[0] if request.trajectory else None
    for p in request.trajectory:
        if is_better(p.score, best.score, higher):
            best = p
    direction = direction_sentence(request.metric, higher)
    return {
        "task_description": " ".join(request.task_description.split()),
        "manual_prompt_section": (
            f"A prompt written by hand for this task: {json.dumps(manual, ensure_ascii=False)}\n" if manual else ""
        ),
        "trajectory": format_trajectory(request.trajectory, request.metric, higher),
        "num_candidates": request.num_candidates,
        "max_words": request.max_words,
        "metric_note": "" if request.metric == "loss" and not higher else f"; {direction}",
        "best_prompt": best.text if best is not None else (manual or ""),
        "metric": request.metric,
        "direction": direction,
        "earlier_rounds": format_earlier_rounds(request.earlier_rounds, request.metric),
        **format_evidence(request),
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
        count = self.answers_per_reply or request.num_candidates
        turns: list[dict[str, str]] = []
        for ex in self.examples:
            # The example speaks the request's metric: its accuracy-like values when higher is better, else its loss.
            example = MentorRequest(
                task_description=ex.task_description,
                trajectory=[
                    ScoredPrompt(text, metric if request.higher_is_better else loss, loss)
                    for text, loss, metric in ex.trajectory
                ],
                num_candidates=request.num_candidates,
                max_words=request.max_words,
                metric=request.metric,
                higher_is_better=request.higher_is_better,
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
