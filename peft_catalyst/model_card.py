"""The peft-catalyst model card: one builder for every adapter folder the package writes.

``trainer.save_model()``, the command line's run folder and :func:`peft_catalyst.push_to_hub` all write the card
built here, with ``huggingface_hub``'s :class:`~huggingface_hub.ModelCard` from the templates in ``model_cards/``
(package ``peft_catalyst.model_cards``): the soft prompt read as text, the restart history, the metrics with the
gradient steps (stages + races), the mentor's name and how to load the adapter.

The card's peft-catalyst part sits between ``<!-- peft-catalyst:begin -->`` and ``<!-- peft-catalyst:end -->``;
updating a card replaces only that part and merges the metadata, so whatever the owner wrote stays. Nothing in it
carries a credential: mentor names, errors and replies go through :func:`~peft_catalyst.redaction.public_text`
(re-exported here; URLs lose their user info and query, key-shaped strings and the given secrets are masked).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from peft_catalyst.history import read_history
from peft_catalyst.offline_models import packaged_model
from peft_catalyst.projection import _unwrap, get_soft_prompt, soft_prompt_text
from peft_catalyst.records import ArmKind, Decision, History, RoundRecord, RunSummary, ScoredPrompt, higher_is_better
from peft_catalyst.redaction import public_obj, public_text

logger = logging.getLogger(__name__)

__all__ = [
    "CARD_TAGS",
    "PORTABLE_SUBFOLDER",
    "SECTION_BEGIN",
    "SECTION_END",
    "build_model_card",
    "latest_eval_metrics",
    "merge_model_card",
    "normalize_history",
    "public_obj",
    "public_text",
    "read_card",
    "read_template",
    "write_model_card",
]

TEMPLATE_PACKAGE = "peft_catalyst.model_cards"
CARD_TEMPLATE = "adapter_card.md"
SECTION_TEMPLATE = "catalyst_section.md"
SECTION_BEGIN = "<!-- peft-catalyst:begin -->"
SECTION_END = "<!-- peft-catalyst:end -->"
CARD_TAGS = ("peft", "prompt-tuning", "peft-catalyst")
PORTABLE_SUBFOLDER = "portable"
README_FILE = "README.md"
#: What the "how to load" snippets name when the card is written without a Hub repository (a local save).
LOCAL_REPO_PLACEHOLDER = "<this folder, or its Hub repo id>"
PROJECT_URL = "https://github.com/peft-catalyst/peft-catalyst"

_SECTION_RE = re.compile(re.escape(SECTION_BEGIN) + r".*?" + re.escape(SECTION_END), re.DOTALL)
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#])")
_PROMPT_CELL_CHARS = 200
# Per task type: the transformers auto class of the base model, PEFT's auto class for the adapter, and the Hub's
# pipeline tag (only where transformers 5 still has that pipeline: it has no text2text or question-answering one).
_AUTO_CLASSES = {
    "CAUSAL_LM": ("AutoModelForCausalLM", "AutoPeftModelForCausalLM", "text-generation"),
    "SEQ_CLS": ("AutoModelForSequenceClassification", "AutoPeftModelForSequenceClassification", "text-classification"),
    "SEQ_2_SEQ_LM": ("AutoModelForSeq2SeqLM", "AutoPeftModelForSeq2SeqLM", None),
    "TOKEN_CLS": ("AutoModelForTokenClassification", "AutoPeftModelForTokenClassification", "token-classification"),
    "QUESTION_ANS": ("AutoModelForQuestionAnswering", "AutoPeftModelForQuestionAnswering", None),
    "FEATURE_EXTRACTION": ("AutoModel", "AutoPeftModelForFeatureExtraction", "feature-extraction"),
}
_THROUGHPUT_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


# ---------------------------------------------------------------------------------------------------------------
# Templates and text hygiene
# ---------------------------------------------------------------------------------------------------------------


def read_template(name: str) -> str:
    """Text of a model-card template shipped in ``peft_catalyst.model_cards`` (works from a wheel or a checkout)."""
    try:
        folder = resources.files(TEMPLATE_PACKAGE)
    except ModuleNotFoundError:  # a source checkout on sys.path without `pip install`: no package-dir mapping
        folder = Path(__file__).resolve().parent.parent / "model_cards"
    return folder.joinpath(name).read_text(encoding="utf-8")


def _cell(text: Any, limit: int = _PROMPT_CELL_CHARS) -> str:
    """One line of literal text for a Markdown table cell (pipes, markup and newlines neutralised)."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return _MD_SPECIAL.sub(r"\\\1", text) if text else "(empty)"


def _code_span(text: Any, limit: int = _PROMPT_CELL_CHARS) -> str:
    """Inline code holding ``text`` literally (one line; backticks inside cannot close it; table-safe pipes)."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    text = text.replace("|", "\\|")  # GFM tables split cells on pipes even inside code spans
    return f"{fence}{pad}{text}{pad}{fence}"


def _code_block(text: str, lang: str = "text") -> str:
    """A fenced code block that no backtick run inside ``text`` can close early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _fmt(value: Any) -> str:
    """A number for a table: 4 significant digits; missing or non-finite values as a dash."""
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "–"
    return _cell(value)


def _hub_model_id(name: str | None) -> str | None:
    """``name`` if it reads as a Hub model id (``org/name``), else None (a local path is no ``base_model``)."""
    if not name or os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.count("/") > 1:
        return None
    if os.path.exists(name):
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


# ---------------------------------------------------------------------------------------------------------------
# The model card
# ---------------------------------------------------------------------------------------------------------------


def normalize_history(history: Any) -> History | None:
    """A :class:`~peft_catalyst.records.History` from a History, a ``catalyst_history.json`` dict (any format), a
    list of rounds (records or dicts) or that file's path."""
    if history is None or isinstance(history, History):
        return history
    if isinstance(history, (str, os.PathLike)):
        return read_history(history)
    if isinstance(history, Mapping):
        summary, rounds = history.get("summary"), list(history.get("rounds") or [])
        if isinstance(summary, RunSummary):
            summary = summary.to_dict()
        return History.from_dict({**history, "summary": summary or {}, "rounds": _round_dicts(rounds)})
    if isinstance(history, Sequence):
        rounds = list(history)
        if rounds and all(isinstance(r, RoundRecord) for r in rounds):
            first = rounds[0]
            summary = RunSummary.of(
                rounds, metric=first.metric, higher_is_better=first.higher_is_better, selection=first.selection
            )
            return History(summary=summary, rounds=rounds)
        return History.from_dict(_round_dicts(rounds))
    raise TypeError(f"history must be a History, a dict, a list of rounds or a path, got {type(history).__name__}")


def _round_dicts(rounds: Sequence[Any]) -> list[dict[str, Any]]:
    """Rounds as dicts (typed records through their own ``to_dict``), for ``History.from_dict``."""
    return [r.to_dict() if isinstance(r, RoundRecord) else dict(r) for r in rounds]


def _score_note(metric: str | None, greater_is_better: bool | None) -> str:
    if metric is None:
        return "score: the run's `catalyst_metric`, the loss unless configured"
    if greater_is_better is None:
        greater_is_better = higher_is_better(metric or "loss")
    return f"score: {_cell(metric)}, {'higher' if greater_is_better else 'lower'} is better"


def _round_metric(history: History | None) -> str | None:
    """The ranking metric shared by every round that scored something (None: no such round, or several metrics)."""
    if history is None:
        return None
    metrics = {r.metric for r in history.rounds if r.decision is not Decision.SKIPPED}
    return metrics.pop() if len(metrics) == 1 else None


def _round_direction(history: History | None) -> bool | None:
    """Whether the shared ranking metric of the rounds is higher-is-better (None when there is no shared one)."""
    if _round_metric(history) is None:
        return None
    return next(r.higher_is_better for r in history.rounds if r.decision is not Decision.SKIPPED)


def _score_header(history: History | None) -> str:
    """The score column's header: the metric's name when all rounds share one (else each cell names its own)."""
    metric = _round_metric(history)
    return f"Score ({_cell(metric, 60)})" if metric else "Score"


def _scores(prompt: ScoredPrompt | None, metric: str | None) -> dict[str, str]:
    """Score and loss cells; ``metric`` is appended to the score when the column header does not name it."""
    if prompt is None:
        return {"score": "–", "loss": "–"}
    score = _fmt(prompt.score)
    if metric and prompt.score is not None:
        score += f" ({_cell(metric, 60)})"
    return {"score": score, "loss": _fmt(prompt.loss)}


def _race_note(record: RoundRecord, header_metric: str | None) -> str:
    """What decided a raced round: the winning arm's last score, with the metric and its training steps."""
    decisive, race = record.decisive, record.race
    if race is None or decisive is None:
        return ""
    metric = "" if header_metric else f"{_cell(record.metric, 60)} "
    return f"race: {metric}{_fmt(decisive.score)} after {race.arm_steps(race.winner)} steps"


def _shape_note(record: RoundRecord, secrets: Sequence[str | None]) -> str:
    """A blended or partial restart's shape, and the nearest-token reading of where it started: such a start is no
    longer a token sequence, so its text is only a reading of it (empty for a full restart or no restart)."""
    shape = record.shape
    if shape is None or shape.name == "full" or not record.restarted:
        return ""
    reading = f", reads as {_code_span(public_text(record.prompt_after, secrets), 60)}" if record.prompt_after else ""
    return f"{shape.label} start{reading}"


def _taken(label: str, note: str) -> str:
    """``label`` with ``note`` added inside its parentheses (or in new ones)."""
    if not note:
        return label
    return f"{label[:-1]}, {note})" if label.endswith(")") else f"{label} ({note})"


def _history_rows(history: History, secrets: Sequence[str | None]) -> list[dict[str, str]]:
    """Table rows: per round the current soft prompt, each candidate (and a race's controls), with the ranking
    score and the loss on the catalyst split, and what was taken."""
    header_metric = _round_metric(history)
    rows: list[dict[str, str]] = []
    for record in history.rounds:
        decision = record.decision
        cell_metric = None if header_metric else record.metric
        base = {"round": _fmt(record.round), "step": _fmt(record.step)}
        if decision is Decision.SKIPPED:
            reason = public_text(record.reason or "no usable candidate", secrets)
            rows.append({**base, "prompt": f"*skipped: {_cell(reason)}*", "score": "–", "loss": "–", "taken": ""})
            continue
        race = record.race
        winning_arm = race.arms[race.winner] if race is not None and race.arms else None
        note = ", ".join(n for n in (_race_note(record, header_metric), _shape_note(record, secrets)) if n)
        if record.current is not None:
            prompt = f"{_cell(public_text(record.current.text, secrets))} *(current soft prompt)*"
            taken = _taken("**taken** (kept)", note) if decision is Decision.KEPT else ""
            rows.append({**base, "prompt": prompt, **_scores(record.current, cell_metric), "taken": taken})
        for index, candidate in enumerate(record.candidates):
            text = _cell(public_text(candidate.text, secrets))
            if candidate.token_ids is None and candidate.error:
                taken = f"not usable: {_cell(public_text(candidate.error, secrets), 80)}"
            elif index == record.winner and decision is Decision.BLIND:
                taken = "**taken** (unscored)"
            elif index == record.winner and decision is Decision.ACCEPTED:
                taken = _taken("**taken**", note)
            else:
                taken = ""
            rows.append({**base, "prompt": text, **_scores(candidate, cell_metric), "taken": taken})
        if race is not None and race.rungs:
            first = race.rungs[0]
            for arm_index, score in zip(first.arms, first.scores):
                arm = race.arms[arm_index]
                if arm.kind is not ArmKind.CONTROL:
                    continue
                shaped = f", {arm.shape.label}" if arm.shape.name != "full" else ""
                prompt = f"{_cell(public_text(arm.text, secrets))} *(random control{shaped})*"
                taken = _taken("**taken**", note) if winning_arm is arm and decision.restarted else ""
                rows.append({**base, "prompt": prompt, **_scores(score, cell_metric), "taken": taken})
    return rows


def _mentor_md(history: History | None, secrets: Sequence[str | None]) -> str:
    """The mentor's name (and the model names its server reported), never a key or a credentialed URL."""
    if history is None:
        return "not recorded"
    summary, calls = history.summary, [r.mentor for r in history.rounds if r.mentor is not None]
    names = [summary.mentor] + [c.name for c in calls]
    names = list(dict.fromkeys(public_text(n, secrets) for n in names if n))
    if not names:
        return "none (plain prompt tuning)"
    models = [c.model for c in calls]
    models = [m for m in dict.fromkeys(public_text(m, secrets) for m in models if m) if not any(m in n for n in names)]
    text = ", ".join(_code_span(n) for n in names)
    if models:
        text += " (model reported by the server: " + ", ".join(_code_span(m) for m in models) + ")"
    usage = summary.mentor_usage or {}
    if usage.get("calls"):
        text += f"; {usage['calls']} call{'s' if usage['calls'] != 1 else ''}"
        tokens = (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
        if tokens:
            text += f", {tokens:,} tokens"
    return text


def _rounds_md(history: History | None) -> str:
    if history is None or not history.rounds:
        return ""
    decisions = [r.decision for r in history.rounds]
    restarted = sum(d.restarted for d in decisions)
    counted = RunSummary.of(history.rounds, mentor=history.summary.mentor, selection=history.summary.selection)
    why = counted.skip_reasons_text()
    paired = counted.beat_random_line()
    if counted.mixed_proposers and counted.proposers_line():  # catalyst_proposers: the wins per proposer
        paired = "; ".join(filter(None, [paired, counted.proposers_line()]))
    shape = f"; restart shape {_code_span(history.summary.restart)}" if history.summary.restart else ""
    source = "proposed" if counted.mixed_proposers else "mentor"
    return (
        f"{len(decisions)} ({restarted} restarted from a {source} prompt, {decisions.count(Decision.KEPT)} kept the "
        f"soft prompt, {counted.skipped} skipped{': ' + why if why else ''})"
        + (f"; {paired}" if paired else "")
        + shape
    )


def _steps_md(history: History | None) -> str:
    """The run's gradient steps: the main loop's, plus the race arms' when rounds raced (empty when not recorded)."""
    if history is None or history.summary.main_steps <= 0:
        return ""
    summary = history.summary
    if not summary.race_steps:
        return str(summary.total_steps)
    return f"{summary.total_steps} ({summary.main_steps} in the stages + {summary.race_steps} in the races)"


def _compute_md(history: History | None) -> str:
    """The run's compute in forward-equivalent tokens, per part (empty when not recorded)."""
    compute = history.summary.compute if history is not None else None
    if compute is None:
        return ""
    return compute.line().removeprefix("compute ") + f" ({compute.train_factor} per trained token, 1 per scored one)"


def _kept_md(history: History | None) -> str:
    """``kept: step 40 (validation label_loss 0.420; final step 0.430)``, when the run kept its best."""
    kept = history.summary.kept_prompt if history is not None else None
    return "" if kept is None else _cell(kept.line())


def _metric_rows(metrics: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    rows = []
    for name, value in (metrics or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or str(name).endswith(_THROUGHPUT_SUFFIXES):
            continue
        rows.append((_cell(name, 80), _fmt(float(value) if isinstance(value, float) else value)))
    return rows


def _card_parts(
    model,
    tokenizer,
    *,
    history: Any,
    metrics: Mapping[str, Any] | None,
    repo_id: str | None,
    base_model: str | None,
    task_name: str | None,
    score_metric: str | None,
    greater_is_better: bool | None,
    final_prompt: str | None,
    license: str | None,
    language: str | list[str] | None,
    secrets: Sequence[str | None],
    adapter_name: str | None,
) -> tuple[ModelCardData, str, str]:
    """The card's metadata, its peft-catalyst section (rendered) and its title."""
    import jinja2

    soft = get_soft_prompt(model, adapter_name)
    config = soft.config
    history = normalize_history(history)
    task_type = str(getattr(config.task_type, "value", config.task_type) or "")
    auto_class, auto_peft_class, pipeline_tag = _AUTO_CLASSES.get(task_type, ("AutoModel", "AutoPeftModel", None))
    peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    base_path = base_model or config.base_model_name_or_path
    hub_base = _hub_model_id(base_path)
    packaged = packaged_model(hub_base)
    if hub_base:
        base_model_md = f"[{hub_base}](https://huggingface.co/{hub_base})"
    elif base_path:
        base_model_md = f"{_code_span(public_text(base_path, secrets))} (a local path on the machine that trained it)"
    else:
        base_model_md = "an unrecorded base model"

    if final_prompt is None and tokenizer is not None:
        try:
            final_prompt = soft_prompt_text(model, tokenizer, adapter_name=soft.adapter_name)
        except (ValueError, RuntimeError) as exc:
            logger.warning("Cannot read the soft prompt as text for the model card: %s", exc)
    if final_prompt is None and history is not None:
        final_prompt = history.summary.final_prompt
    if score_metric is None and _round_metric(history) is not None:
        score_metric, greater_is_better = _round_metric(history), _round_direction(history)

    task_bits = []
    if task_name:
        task_bits.append(_code_span(public_text(task_name, secrets)))
    description = getattr(config, "task_description", None)
    if description:
        task_bits.append(_cell(public_text(description, secrets), 400))

    base_kwargs = pipeline_kwargs = ""  # the head's size: a base model loads with 2 labels unless told
    num_labels = getattr(getattr(_unwrap(model), "config", None), "num_labels", None)
    if task_type in ("SEQ_CLS", "TOKEN_CLS") and num_labels:
        base_kwargs = f", num_labels={int(num_labels)}"
        pipeline_kwargs = f', model_kwargs={{"num_labels": {int(num_labels)}}}'

    environment = jinja2.Environment(
        trim_blocks=True, lstrip_blocks=True, autoescape=False, undefined=jinja2.StrictUndefined
    )
    section = environment.from_string(read_template(SECTION_TEMPLATE)).render(
        project_url=PROJECT_URL,
        num_virtual_tokens=soft.num_virtual_tokens,
        base_model_md=base_model_md,
        base_model_id=public_text(base_path or "<base model>", secrets).replace('"', '\\"'),
        base_kwargs=base_kwargs,
        pipeline_kwargs=pipeline_kwargs,
        task_type=task_type or "unknown",
        task_md=": ".join(task_bits),
        peft_type=peft_type,
        is_catalyst=peft_type == "CATALYST",
        portable=PORTABLE_SUBFOLDER,
        mentor_md=_mentor_md(history, secrets),
        rounds_md=_rounds_md(history),
        steps_md=_steps_md(history),
        compute_md=_compute_md(history),
        kept_md=_kept_md(history),
        projection_metric=getattr(config, "projection_metric", None) or "cosine",
        final_prompt_block=_code_block(public_text(final_prompt, secrets)) if final_prompt is not None else "",
        metrics=_metric_rows(metrics),
        history_given=history is not None,
        history_rows=_history_rows(history, secrets) if history is not None else [],
        raced=history is not None and any(r.race is not None for r in history.rounds),
        shaped=history is not None and any(_shape_note(r, secrets) for r in history.rounds),
        score_header=_score_header(history),
        score_note=_score_note(score_metric, greater_is_better),
        auto_class=auto_class,
        auto_peft_class=auto_peft_class,
        pipeline_task=pipeline_tag,
        packaged_install=packaged.install_command if packaged is not None else "",
        repo_id=repo_id or LOCAL_REPO_PLACEHOLDER,
    )
    data = ModelCardData(
        library_name="peft",
        base_model=hub_base,
        tags=list(CARD_TAGS),
        pipeline_tag=pipeline_tag,
        license=license,
        language=language,
    )
    title = repo_id.split("/")[-1] if repo_id else "peft-catalyst adapter"
    return data, section.strip("\n"), title


def _replace_section(text: str, section: str) -> str:
    """``text`` with its peft-catalyst section replaced by ``section`` (appended when it has none)."""
    begins, ends = text.count(SECTION_BEGIN), text.count(SECTION_END)
    if begins != ends:
        raise ValueError(
            f"The existing model card has {begins} '{SECTION_BEGIN}' and {ends} '{SECTION_END}' markers: fix its "
            "README.md so that each begin marker has its end marker (or remove both), then push again."
        )
    if not begins:
        return text.rstrip("\n") + ("\n\n" if text.strip() else "") + section + "\n"
    first = True

    def substitute(_match: re.Match[str]) -> str:
        nonlocal first
        keep, first = first, False
        return section if keep else ""

    return _SECTION_RE.sub(substitute, text)


def merge_model_card(existing: ModelCard | str, new: ModelCard) -> ModelCard:
    """Update an existing card with a freshly built one: only the peft-catalyst section and our metadata change.

    The owner's text outside the markers and their metadata (license, language, extra tags, ...) are kept;
    ``library_name``, ``base_model`` (when known) and the peft-catalyst tags are set.
    """
    card = ModelCard(existing.content if isinstance(existing, ModelCard) else str(existing))
    match = _SECTION_RE.search(new.text)
    if match is None:
        raise ValueError("The new card has no peft-catalyst section to merge.")
    card.text = _replace_section(card.text, match.group(0))
    data, fresh = card.data, new.data
    data.library_name = fresh.library_name
    if fresh.base_model:
        data.base_model = fresh.base_model
    tags = list(data.tags or [])
    data.tags = tags + [t for t in fresh.tags or [] if t not in tags]
    for field in ("pipeline_tag", "license", "language"):
        if getattr(data, field, None) is None and getattr(fresh, field, None) is not None:
            setattr(data, field, getattr(fresh, field))
    return card


def build_model_card(
    model,
    tokenizer=None,
    *,
    history: Any = None,
    metrics: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    task_name: str | None = None,
    score_metric: str | None = None,
    greater_is_better: bool | None = None,
    final_prompt: str | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    existing: ModelCard | str | None = None,
    secrets: Iterable[str | None] = (),
    adapter_name: str | None = None,
    tags: Iterable[str] | None = None,
) -> ModelCard:
    """The model card of a prompt-tuned ``model``, built from the ``model_cards/`` templates.

    Args:
        model: the ``PeftModel`` (CATALYST or PROMPT_TUNING adapter).
        tokenizer: reads the final soft prompt as text (else ``final_prompt`` or the history's summary).
        history: a :class:`~peft_catalyst.records.History`, the content of a ``catalyst_history.json`` (any
            format), a list of rounds, or that file's path.
        metrics: evaluation metrics, ``{name: number}``.
        repo_id: the Hub repository, used in the "how to load" snippets and the title.
        base_model: Hub id of the base model when ``base_model_name_or_path`` is a local path.
        task_name, score_metric, greater_is_better: what the card says about the task and the restart scores.
        existing: a card (or its text) to update: only the peft-catalyst section and our metadata change.
        secrets: strings that must never appear in the card (masked on top of the usual key/URL patterns).
        tags: Hub tags added to the peft-catalyst ones.
    """
    data, section, title = _card_parts(
        model,
        tokenizer,
        history=history,
        metrics=metrics,
        repo_id=repo_id,
        base_model=base_model,
        task_name=task_name,
        score_metric=score_metric,
        greater_is_better=greater_is_better,
        final_prompt=final_prompt,
        license=license,
        language=language,
        secrets=list(secrets),
        adapter_name=adapter_name,
    )
    data.tags = list(dict.fromkeys([*data.tags, *(tags or [])]))
    card = ModelCard.from_template(
        data, template_str=read_template(CARD_TEMPLATE), title=title, catalyst_section=section
    )
    if existing is not None:
        card = merge_model_card(existing, card)
    return card


def write_model_card(
    model, directory: str | os.PathLike, tokenizer=None, *, existing: Any = None, **kwargs: Any
) -> Path:
    """Build the card (:func:`build_model_card`) and write it as ``directory/README.md``; returns its path.

    A peft-catalyst card already there (one with the section markers) is updated: only the section and our metadata
    change. Any other README (PEFT's template, written by ``save_pretrained``) is replaced. ``existing`` overrides
    what is on disk.
    """
    readme = Path(directory) / README_FILE
    existing = existing if existing is not None else read_card(directory)
    build_model_card(model, tokenizer, existing=existing, **kwargs).save(readme)
    return readme


def read_card(directory: str | os.PathLike) -> str | None:
    """The peft-catalyst card in ``directory/README.md`` (None when there is none, or another README such as PEFT's
    template)."""
    readme = Path(directory) / README_FILE
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    return text if SECTION_BEGIN in text else None


def latest_eval_metrics(log_history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The last evaluation's metrics in a ``Trainer``'s ``state.log_history`` (without timing entries)."""
    for entry in reversed(log_history):
        metrics = {
            k: v
            for k, v in entry.items()
            if k.startswith("eval_")
            and not k.endswith(_THROUGHPUT_SUFFIXES)
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
        }
        if metrics:
            return metrics
    return {}
