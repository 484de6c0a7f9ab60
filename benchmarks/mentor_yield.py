"""How often does the embedded SmolLM2 mentor yield a usable candidate? (issue 3's benchmark)

For each packaged task (movie-review sentiment, TREC question type, SMS spam) it builds realistic mentor requests:
trajectories of soft prompts projected to text (random vocabulary tokens, as a projection of a young soft prompt
looks) mixed with a few readable prompts, with decreasing losses; then calls the mentor and reports, per task and
overall, the share of calls with at least one usable candidate and the mean number of candidates per call.

    python benchmarks/mentor_yield.py --calls-per-task 10           # >= 30 calls, writes benchmarks/results/
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


def make_request(task: dict, tokenizer, rng: random.Random, *, num_candidates: int, max_words: int):
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
        if i >= n_points - 2 and rng.random() < 0.7:
            text = rng.choice(task["readable"])
        else:
            text = tokenizer.convert_tokens_to_string(rng.sample(vocab, 8)).strip()
        loss -= rng.uniform(0.02, 0.15)
        rng.uniform(-0.05, 0.05)  # once an accuracy's noise: still drawn, so the requests stay those measured before
        points.append(TrajectoryPoint(text, round(loss, 4), round(loss, 4)))
    manual = task["manual"] if rng.random() < 0.5 else None
    return MentorRequest(  # ranked as the CLI default ranks: by label loss, lower is better
        task["description"],
        points,
        num_candidates=num_candidates,
        max_words=max_words,
        manual_prompt=manual,
        metric="label_loss",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls-per-task", type=int, default=10)
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
    settings = mentor.cache_identity() | {
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
        examples[task_name] = []
        for call in range(args.calls_per_task):
            request = make_request(task, tokenizer, rng, num_candidates=args.num_candidates, max_words=args.max_words)
            try:
                proposal = mentor.propose(request)
            except MentorError as exc:
                errors += 1
                counts.append(0)
                print(f"  {task_name} call {call}: MentorError {exc}", flush=True)
                continue
            counts.append(len(proposal.candidates))
            latencies.append(proposal.latency_s)
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
