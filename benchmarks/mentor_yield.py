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
"""

from __future__ import annotations

import argparse
import json
import logging
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
    from peft_catalyst.mentors import MentorRequest, TrajectoryPoint

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
        points.append(TrajectoryPoint(text, score, round(loss, 4)))
    manual = task["manual"] if rng.random() < manual_rate else None
    return MentorRequest(
        description or task["description"],
        points,
        num_candidates=num_candidates,
        max_words=max_words,
        manual_prompt=manual,
        metric=metric,
        higher_is_better=not metric.endswith("loss"),
    )


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
    args = parser.parse_args(argv)

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
