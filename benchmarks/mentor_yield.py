"""How often does the embedded SmolLM2 mentor yield a usable candidate? (issues 3 and 25)

For each packaged task (movie-review sentiment, TREC question type, SMS spam) it builds realistic mentor requests:
trajectories of soft prompts projected to text (random vocabulary tokens, as a projection of a young soft prompt
looks) mixed with a few readable prompts, with improving scores; then calls the mentor and reports, per task and
overall, the share of calls with at least one usable candidate, the mean number of candidates per call and why
the other lines were rejected.

By default the requests are those the examples send (``examples/sequence_classification.py``): the packaged task's
own description, ranked by accuracy, no manual prompt. ``--descriptions short --metric label_loss --manual-rate 0.5``
gives the requests of the first measurements (issue 3).

    python benchmarks/mentor_yield.py --calls-per-task 4            # 12 calls, writes benchmarks/results/
    python benchmarks/mentor_yield.py --calls-per-task 2 --no-write --temperature 0.5   # quick look

Runs offline (HF_HUB_OFFLINE=1). One thread by default: on a shared 2-core machine two threads thrash.

``--screen`` (issue 19) measures what the prompts are worth, not only how many come back: for each request the
SmolLM2 doer (label words) scores, untrained on the first ``--screen-examples`` catalyst examples of the task, every
prompt of each source, and the best of N (N = 4 and 16) counts: (a) today's request, (b) the evidence request
(examples, errors of the manual prompt, label words, best prompts) asking "new", (c) the same asking "edit",
(d) random words, (e) random words anchored with the label words, (f) the manual prompt. It reports usable prompts
and seconds per call, the best-of-N label_loss and accuracy per source, and how often (a), (b) and (c) beat (e),
with a 95% Wilson interval, per task and pooled. Each finished request appends one line to
``benchmarks/results/mentor_yield_screen_rows.jsonl``; the same command resumes::

    python -m benchmarks.mentor_yield --screen --calls-per-task 30 --screen-examples 16 --threads 2   # the README's
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASKS = {
    "sentiment": {
        "description": "sentiment of movie review snippets (positive/negative)",
        "readable": ["Is this review positive or negative", "Review sentiment", "movie review positive negative"],
        "manual": "Classify the sentiment of this movie review",
    },
    "trec": {
        "description": (
            "TREC question type (6 coarse classes: abbreviation, entity, description, human, location, number)"
        ),
        "readable": ["What type of question is this", "question type", "answer type: human location number"],
        "manual": "Classify the type of answer this question asks for",
    },
    "spam": {
        "description": "SMS spam detection (spam or ham)",
        "readable": ["Is this SMS spam", "spam or not", "text message spam ham"],
        "manual": "Is this text message spam or ham?",
    },
}


#: The packaged task behind each benchmark task (its description is what the trainer sends by default).
PACKAGED = {"sentiment": "rotten_tomatoes", "trec": "trec", "spam": "sms_spam"}


def packaged_descriptions() -> dict[str, str]:
    """Each benchmark task's packaged description (``TaskData.task_description``), as the examples send it."""
    from peft_catalyst.app.data import load_task

    return {name: load_task(PACKAGED[name]).task_description for name in TASKS}


def make_request(
    task: dict,
    tokenizer,
    rng: random.Random,
    *,
    num_candidates: int,
    max_words: int,
    metric: str = "label_loss",
    description: str | None = None,
    manual_rate: float = 0.5,
    readable_rate: float = 0.7,
):
    """A request like the trainer sends after a gradient stage: 4-6 scored points, worst to best."""
    from peft_catalyst.mentors import MentorRequest, ScoredPrompt
    from peft_catalyst.records import higher_is_better

    vocab = [
        tok
        for tok in tokenizer.convert_ids_to_tokens(range(200, min(tokenizer.vocab_size, 49152)))
        if tok and tok.isascii()
    ]
    n_points = rng.randint(4, 6)
    points = []
    loss = rng.uniform(0.9, 1.4)
    for i in range(n_points):
        if i >= n_points - 2 and rng.random() < readable_rate:
            text = rng.choice(task["readable"])
        else:
            text = tokenizer.convert_tokens_to_string(rng.sample(vocab, 8)).strip()
        loss -= rng.uniform(0.02, 0.15)
        noise = rng.uniform(-0.05, 0.05)  # drawn for every metric, so the requests stay those measured before
        score = round(loss, 4) if metric.endswith("loss") else round(min(1.0, 0.5 + (1.4 - loss) / 2 + noise), 4)
        points.append(ScoredPrompt(text, score, round(loss, 4)))
    manual = task["manual"] if rng.random() < manual_rate else None
    return MentorRequest(
        description or task["description"],
        points,
        num_candidates=num_candidates,
        max_words=max_words,
        manual_prompt=manual,
        metric=metric,
        higher_is_better=higher_is_better(metric),
    )


def wilson(wins: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion ``wins / n``, to 3 decimals (as the results store it)."""
    from peft_catalyst.app.compare.stats import binomial_interval

    low, high = binomial_interval(wins, n)
    return round(low, 3), round(high, 3)


SOURCES = ("a_today", "b_evidence_new", "c_evidence_edit", "d_random", "e_random_anchored", "f_manual")
#: The random sources each mentor source is counted against: (e) as the issue asks, and (d), what (e) is wherever
#: the labels cannot sit beside a text (TREC-6 in 8 tokens, since the anchor stopped replacing whole prompts).
CONTROLS = {"e": "e_random_anchored", "d": "d_random"}
MENTOR_SOURCES = ("a_today", "b_evidence_new", "c_evidence_edit")


def screen_settings(args) -> dict:
    """What a screening row depends on: rows recorded under other settings are not resumed."""
    return {
        "doer": "SmolLM2-135M (label words)", "ns": sorted(args.screen_ns), "catalyst_examples": args.screen_examples,
        "seed": args.seed, "max_words": args.max_words, "metric": "label_loss (lower is better), untrained",
    }  # fmt: skip


class _ScreenTask:
    """One task's doer, scorer, evidence source and mentor for ``--screen``; every distinct prompt is scored once."""

    def __init__(self, task_name: str, args, out_dir: str) -> None:
        from benchmarks.trainer_overhead import setup_doer
        from peft_catalyst import CatalystTrainer, CatalystTrainingArguments
        from peft_catalyst.mentors import TransformersMentor
        from peft_catalyst.projection import get_soft_prompt, vocabulary_words
        from peft_catalyst.rounds.evidence import EvidenceSource
        from peft_catalyst.rounds.scoring import PromptScorer

        self.name = task_name
        model, self.tok, spec, self.task = setup_doer("smollm2", args.seed, PACKAGED[task_name])
        split = spec.datasets["catalyst"].select(range(args.screen_examples))
        self.n_tokens = get_soft_prompt(model).num_virtual_tokens
        self.vocab = model.word_embeddings.weight
        self.labels = [w.strip() for w in self.task.label_words]
        self.mentor = TransformersMentor.embedded(model.get_base_model(), self.tok, seed=args.seed)
        self.words = vocabulary_words(self.tok)
        targs = CatalystTrainingArguments(
            output_dir=f"{out_dir}/{task_name}", per_device_eval_batch_size=16, use_cpu=True, report_to=[],
            catalyst_rounds=0,
        )  # fmt: skip
        trainer = CatalystTrainer(model=model, args=targs, catalyst_dataset=split, **spec.trainer_kwargs())
        self.scorer = PromptScorer(
            trainer, split, metric="label_loss", predictions=True, batch_size=args.screen_score_batch
        )
        self.source = EvidenceSource(self.scorer.scored_dataset, self.tok, self.labels)
        self.scored: dict[str, tuple[float, float]] = {}
        (self.manual,) = self.scorer.score_prompts([self._embed(self.task.manual_prompt)])

    def _embed(self, text: str):
        from peft_catalyst.projection import text_to_token_ids

        return self.vocab[text_to_token_ids(self.tok, text, self.n_tokens)].detach().clone()

    def fits(self, text: str) -> bool:
        return len(self.tok(text, add_special_tokens=False)["input_ids"]) <= self.n_tokens

    def score(self, texts: list[str]) -> list[tuple[float, float]]:
        """(label_loss, accuracy) of each text as the doer's prompt, untrained."""
        new = [t for t in dict.fromkeys(texts) if t not in self.scored]
        if new:
            for text, s in zip(new, self.scorer.score_prompts([self._embed(t) for t in new])):
                self.scored[text] = (s.value, s.metrics.get("accuracy", float("nan")))
        return [self.scored[t] for t in texts]

    def row(self, call: int, args, settings: dict) -> dict:
        """One request's record: every source's prompts at each N and the best of them."""
        from dataclasses import replace

        from peft_catalyst.mentors import RandomMentor
        from peft_catalyst.records import ranking_key
        from peft_catalyst.rounds.evidence import anchor_labels

        ns, top = sorted(args.screen_ns), max(args.screen_ns)
        rng = random.Random(f"{args.seed}-{self.name}-{call}")
        today = make_request(
            TASKS[self.name], self.tok, rng, num_candidates=top, max_words=args.max_words, metric="label_loss",
            description=self.task.task_description, manual_rate=0.0, readable_rate=0.5,
        )  # fmt: skip
        best = sorted(today.trajectory, key=lambda p: ranking_key(p.score, today.higher_is_better))[:3]
        evidence = replace(
            today,
            examples=self.source.examples(3, 25, seed=call),
            errors=self.source.errors(self.manual.predictions, 3, 25, seed=call),
            labels=self.labels,
            best_prompts=best,
        )
        edit = replace(evidence, proposal="edit")
        asked = {"a_today": today, "b_evidence_new": evidence, "c_evidence_edit": edit}
        row: dict = {"task": self.name, "call": call, "settings": settings, "sources": {}}
        started = time.perf_counter()
        for name, request in asked.items():
            began = time.perf_counter()
            replies = self.mentor.complete(self.mentor.build_messages(request), request).texts
            seconds = time.perf_counter() - began
            per_n = {}
            for n in ns:
                sub = replace(request, num_candidates=n)
                per_n[n] = self.mentor.parse(replies[: self.mentor.samples_for(sub)], sub).candidates
            row["sources"][name] = {"seconds": round(seconds, 1), "replies": len(replies), "texts": per_n}
        control = RandomMentor(self.words, seed=args.seed * 100_000 + call)
        random_texts = list(control.propose(replace(today, num_candidates=top)).candidates)
        row["sources"]["d_random"] = {"texts": {n: random_texts[:n] for n in ns}}
        anchored = [anchor_labels(t, self.labels, self.fits) for t in random_texts]
        row["sources"]["e_random_anchored"] = {"texts": {n: anchored[:n] for n in ns}}
        for entry in row["sources"].values():
            entry["best"] = {}
            for n, texts in entry["texts"].items():
                results = [r for r in self.score(texts) if math.isfinite(r[0])]
                loss, acc = min(results) if results else (None, None)
                entry["best"][n] = {"usable": len(texts), "label_loss": loss, "accuracy": acc}
        manual = (self.manual.value, self.manual.metrics.get("accuracy"))
        row["sources"]["f_manual"] = {
            "texts": {n: [self.task.manual_prompt] for n in ns},
            "best": {n: {"usable": 1, "label_loss": manual[0], "accuracy": manual[1]} for n in ns},
        }
        row["seconds"] = round(time.perf_counter() - started, 1)
        return row


def screen(args) -> dict:
    """Best-of-N zero-shot scores per source and task (see the module docstring, ``--screen``); resumable.

    One mentor call per source and request samples ``max(N)`` one-line replies; a smaller N is judged on the first
    ``mentor.samples_for`` of them, exactly the replies a call asking for that N samples (replies are drawn
    independently, and a one-line request does not depend on N). Random words are drawn ``max(N)`` at a time and the
    first N count. Requests go round the tasks (call 0 of each, then call 1, ...), so a stopped run covers them all;
    each finished one appends a line to ``--screen-rows``, and the same command resumes.
    """
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    settings = screen_settings(args)
    rows_path: Path = args.screen_rows
    done = set()
    if rows_path.exists():
        for line in rows_path.read_text().splitlines():
            row = json.loads(line)
            if row["settings"] == settings:
                done.add((row["task"], row["call"]))
    top = max(args.screen_ns)
    tasks: dict[str, _ScreenTask] = {}
    with tempfile.TemporaryDirectory() as out:
        for call in range(args.calls_per_task):
            for task_name in args.tasks:
                if (task_name, call) in done:
                    continue
                if task_name not in tasks:
                    tasks[task_name] = _ScreenTask(task_name, args, out)
                row = tasks[task_name].row(call, args, settings)
                rows_path.parent.mkdir(parents=True, exist_ok=True)
                with rows_path.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                line = {k: v["best"][top]["label_loss"] for k, v in row["sources"].items()}
                print(f"{task_name} {call} ({row['seconds']} s): {json.dumps(line)}", flush=True)
    return summarize_screen(rows_path, settings, args.tasks)


SOURCE_NAMES = {
    "a_today": "(a) today's request",
    "b_evidence_new": '(b) evidence request, `"new"`',
    "c_evidence_edit": '(c) evidence request, `"edit"`',
    "d_random": "(d) random words",
    "e_random_anchored": "(e) random words, label-anchored",
    "f_manual": "(f) the manual prompt",
}


def screen_markdown(result: dict) -> str:
    """The screening summary as markdown: per N a pooled table of the sources, then per task how often each mentor
    source beat (e) and (d)."""
    summary, settings = result["summary"], result["settings"]
    lines = [f"# mentor_yield --screen ({result['date']})", "", f"settings: `{json.dumps(settings)}`", ""]
    pooled = summary.get("pooled")
    if not pooled:
        return "\n".join([*lines, "no requests recorded yet", ""])
    tasks = [t for t in settings["tasks"] if t in summary]
    counts = ", ".join(f"{t} {summary[t]['requests']}" for t in tasks)
    for n in settings["ns"]:
        per_n = pooled[str(n)]
        lines += [
            f"## best of N = {n} (requests: {counts})", "",
            "| source | usable per call | s per call | " + " | ".join(f"{t}: label_loss (acc)" for t in tasks) + " |",
            "|---|---|---|" + "---|" * len(tasks),
        ]  # fmt: skip
        for key, name in SOURCE_NAMES.items():
            row = per_n[key]
            cells = ["-" if row[c] is None else str(row[c]) for c in ("usable_per_call", "seconds_per_call")]
            for t in tasks:
                mine = summary[t][str(n)][key]
                loss, acc = mine["best_label_loss_mean"], mine["best_accuracy_mean"]
                cells.append("-" if loss is None else f"{loss:.3f} ({acc:.3f})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        scopes = [*settings["tasks"], "pooled"]
        for letter in CONTROLS:
            lines += ["", f"| beats ({letter}) on best label_loss | " + " | ".join(scopes) + " |",
                      "|---|" + "---|" * len(scopes)]  # fmt: skip
            for key in MENTOR_SOURCES:
                cells = []
                for scope in scopes:
                    won = summary.get(scope, {}).get(str(n), {}).get(f"{key}_beats_{letter}")
                    if won is None:
                        cells.append("-")
                        continue
                    low, high = won["wilson95"]
                    cells.append(f"{won['wins']}/{won['requests']} [{low:.2f}, {high:.2f}]")
                lines.append(f"| {SOURCE_NAMES[key]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def summarize_screen(rows_path: Path, settings: dict, tasks: list[str]) -> dict:
    """Per task and pooled: best-of-N label loss / accuracy per source, usable prompts, seconds per mentor call,
    and how often (a), (b) and (c) beat (e) and (d) (ties counted apart), with a 95% Wilson interval."""
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    rows = [r for r in rows if r["settings"] == settings and r["task"] in tasks]
    summary: dict = {}
    for scope in [*tasks, "pooled"]:
        picked = [r for r in rows if scope in ("pooled", r["task"])]
        if not picked:
            continue
        out: dict = {"requests": len(picked)}
        for n in settings["ns"]:
            key = str(n)
            per_n: dict = {}
            for name in SOURCES:
                best = [r["sources"][name]["best"][key] for r in picked]
                losses = [b["label_loss"] for b in best if b["label_loss"] is not None]
                accs = [b["accuracy"] for b in best if b["accuracy"] is not None]
                seconds = [r["sources"][name]["seconds"] for r in picked if "seconds" in r["sources"][name]]
                per_n[name] = {
                    "best_label_loss_mean": round(statistics.fmean(losses), 4) if losses else None,
                    "best_accuracy_mean": round(statistics.fmean(accs), 4) if accs else None,
                    "usable_per_call": round(statistics.fmean(b["usable"] for b in best), 2),
                    "seconds_per_call": round(statistics.fmean(seconds), 1) if seconds else None,
                }
            for name in MENTOR_SOURCES:
                for letter, control in CONTROLS.items():
                    wins = ties = 0
                    for r in picked:
                        m = r["sources"][name]["best"][key]["label_loss"]
                        c = r["sources"][control]["best"][key]["label_loss"]
                        wins += m is not None and (c is None or m < c)
                        ties += m is not None and c is not None and m == c
                    per_n[f"{name}_beats_{letter}"] = {
                        "wins": wins, "ties": ties, "requests": len(picked), "wilson95": wilson(wins, len(picked)),
                    }  # fmt: skip
            out[key] = per_n
        summary[scope] = out
    return {
        "benchmark": "mentor_yield --screen",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings | {"tasks": tasks},
        "summary": summary,
        "rows_file": rows_path.name,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls-per-task", type=int, default=4)
    parser.add_argument("--descriptions", choices=["packaged", "short"], default="packaged")
    parser.add_argument("--metric", default="accuracy", help="accuracy (the examples) or label_loss (the CLI)")
    parser.add_argument("--manual-rate", type=float, default=0.0, help="share of requests with a manual prompt")
    parser.add_argument(
        "--readable-rate", type=float, default=0.0, help="chance that each of the last 2 points is a readable prompt"
    )
    parser.add_argument(
        "--trajectory-tokenizer",
        choices=["minilm", "smollm2"],
        default="minilm",
        help="whose vocabulary the projected soft prompts are made of (the doer's: MiniLM in the examples' run)",
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--num-candidates", type=int, default=4)
    parser.add_argument("--max-words", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--num-samples", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--no-few-shot", action="store_true")
    parser.add_argument("--no-strict-retry", action="store_true")
    parser.add_argument("--no-task-filter", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mentor_yield.json")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--show", action="store_true", help="print every raw reply and the candidates")
    parser.add_argument("--screen", action="store_true", help="score each source's prompts with the doer (issue 19)")
    parser.add_argument(
        "--screen-score-batch", type=int, default=64, help="rows (examples x prompts) per scoring pass"
    )
    parser.add_argument("--screen-report", action="store_true", help="summarize the --screen rows recorded so far")
    parser.add_argument("--screen-ns", type=int, nargs="+", default=[4, 16], help="prompts per source and request (N)")
    parser.add_argument(
        "--screen-rows", type=Path, default=Path(__file__).parent / "results" / "mentor_yield_screen_rows.jsonl",
        help="one line per finished request; a rerun resumes from it",
    )
    parser.add_argument("--screen-examples", type=int, default=32, help="catalyst examples each prompt is scored on")
    args = parser.parse_args(argv)
    if args.screen or args.screen_report:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        if args.screen_report:  # the rows so far, no model loaded
            result = summarize_screen(args.screen_rows, screen_settings(args), args.tasks)
        else:
            result = screen(args)
        report = screen_markdown(result)
        print(report)
        if not args.no_write:
            out = args.out.with_name("mentor_yield_screen.json")
            out.write_text(json.dumps(result, indent=2) + "\n")
            out.with_suffix(".md").write_text(report)
            print(f"wrote {out} and {out.with_suffix('.md')}")
        return 0

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    from peft_catalyst.app.assets import load_smollm2
    from peft_catalyst.mentors import MentorError, TransformersMentor

    model, tokenizer = load_smollm2()
    kwargs = {"seed": args.seed}
    for key in ("temperature", "top_p", "num_samples", "max_new_tokens"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    mentor = TransformersMentor.embedded(
        model,
        tokenizer,
        few_shot=not args.no_few_shot,
        strict_retry=not args.no_strict_retry,
        min_task_overlap=not args.no_task_filter,
        **kwargs,
    )
    descriptions = packaged_descriptions() if args.descriptions == "packaged" else {}
    doer_tokenizer = tokenizer
    if args.trajectory_tokenizer == "minilm":
        from peft_catalyst.app.assets import load_minilm_for_sequence_classification

        doer_tokenizer = load_minilm_for_sequence_classification(num_labels=2)[1]
    settings = mentor.cache_identity() | {
        "descriptions": args.descriptions,
        "metric": args.metric,
        "manual_rate": args.manual_rate,
        "readable_rate": args.readable_rate,
        "trajectory_tokenizer": args.trajectory_tokenizer,
        "few_shot": mentor.few_shot,
        "strict_retry": mentor.strict_retry,
        "min_task_overlap": mentor.min_task_overlap,
        "num_candidates": args.num_candidates,
        "max_words": args.max_words,
        "threads": args.threads,
    }
    print(f"mentor {mentor.name}: {json.dumps(settings)}", flush=True)

    per_task: dict[str, dict] = {}
    examples: dict[str, list] = {}
    rng = random.Random(args.seed)
    start = time.perf_counter()
    for task_name in args.tasks:
        task = TASKS[task_name]
        counts, latencies, retries, errors = [], [], 0, 0
        rejected: dict[str, int] = {}
        examples[task_name] = []
        for call in range(args.calls_per_task):
            request = make_request(
                task,
                doer_tokenizer,
                rng,
                num_candidates=args.num_candidates,
                max_words=args.max_words,
                metric=args.metric,
                description=descriptions.get(task_name),
                manual_rate=args.manual_rate,
                readable_rate=args.readable_rate,
            )
            try:
                proposal = mentor.propose(request)
            except MentorError as exc:
                errors += 1
                counts.append(0)
                print(f"  {task_name} call {call}: MentorError {exc}", flush=True)
                continue
            counts.append(len(proposal.candidates))
            latencies.append(proposal.latency_s)
            for _, reason in proposal.rejected:
                rejected[reason] = rejected.get(reason, 0) + 1
            retries += proposal.attempts > 1
            if len(examples[task_name]) < 5:
                examples[task_name].append(proposal.candidates)
            print(
                f"  {task_name} call {call}: {len(proposal.candidates)} usable in {proposal.latency_s:.1f} s "
                f"(attempts {proposal.attempts}) {proposal.candidates}",
                flush=True,
            )
            if args.show:
                print("    raw:", proposal.raw.replace("\n", " | "), flush=True)
                print("    rejected:", proposal.rejected, flush=True)
        per_task[task_name] = {
            "calls": len(counts),
            "yield": sum(c > 0 for c in counts) / len(counts),
            "candidates_per_call": statistics.fmean(counts),
            "latency_s_mean": statistics.fmean(latencies) if latencies else None,
            "retried_calls": retries,
            "errors": errors,
            "rejected": rejected,
        }
    total_calls = sum(t["calls"] for t in per_task.values())
    overall = {
        "calls": total_calls,
        "yield": sum(t["yield"] * t["calls"] for t in per_task.values()) / total_calls,
        "candidates_per_call": sum(t["candidates_per_call"] * t["calls"] for t in per_task.values()) / total_calls,
        "wall_s": round(time.perf_counter() - start, 1),
        "usage": mentor.usage.to_dict(),
    }
    print(f"\n{'task':<10} {'calls':>5} {'yield':>6} {'cand/call':>9} {'s/call':>7}")
    for name, row in per_task.items():
        print(
            f"{name:<10} {row['calls']:>5} {row['yield']:>6.2f} {row['candidates_per_call']:>9.2f} "
            f"{row['latency_s_mean'] or 0:>7.1f}"
        )
    print(f"{'overall':<10} {overall['calls']:>5} {overall['yield']:>6.2f} {overall['candidates_per_call']:>9.2f}")
    print("rejected:", {name: row["rejected"] for name, row in per_task.items()})
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "benchmark": "mentor_yield",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "torch": torch.__version__,
                "cpu_count": os.cpu_count(),
            },
            "settings": settings,
            "per_task": per_task,
            "overall": overall,
            "examples": examples,
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
