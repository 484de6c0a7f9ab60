"""Does the mentor help? The catalyst against the right baselines, with seeds, spread and paired intervals.

Plans ``full``, ``v2``, ``v3-stall`` and ``v3-plateau``. ``full`` (issue 7, committed under
``results/compare/cells/full/``): the first grid, six methods, restart methods from PEFT's RANDOM init. ``v2``
(issue 14, the default): seven methods, paired per seed (same split, init, head and data order), restart methods
from the TEXT init of the task's manual prompt in every cell and, in one cell, also from the RANDOM init (methods
suffixed ``@random``):

    single-random    plain prompt tuning from PEFT's RANDOM init (no rounds)
    single-text      plain prompt tuning from the TEXT init of the task's manual prompt (no rounds)
    single-matched   plain prompt tuning from the restart methods' init for as many gradient steps as catalyst-race
                     spent in all on that seed (stages + races; read from that run's record, so it runs after it)
    random-race      the race (catalyst_selection="race") with random-vocabulary candidates (RandomMentor)
    catalyst-race    the race with the LLM mentor's candidates
    catalyst-best    the LLM mentor, elitist selection: candidates scored untrained against the current prompt
    blind            restart from the mentor's first candidate unscored (the research code's rule)

The first plan's ``random-restarts``, ``llm-only`` and ``catalyst`` (= ``catalyst-best`` from RANDOM init) stay
readable. Headline contrasts of v2, each paired over seeds with a 95% interval and wins/ties/losses, pooled and per
doer: catalyst-race - random-race, catalyst-race - single-matched, catalyst-race - the better single of its cell.
Each finished run (task, doer, method, seed) is one JSON under ``benchmarks/results/compare/cells/<plan>/``, written
as it finishes and skipped on rerun.

    python -m benchmarks.compare --dry-run             # print the v2 plan and its time estimate
    python -m benchmarks.compare --quick               # machinery check, under 10 minutes
    python -m benchmarks.compare --plan v2 --commit-each  # the v2 grid, resumable; git-commits each finished run
    python -m benchmarks.compare --plan full --report-only # rebuild the first grid's report from its runs

Benchmark v3 (issue 22; methods and regimes: :mod:`benchmarks.compare.plans`), resumable, a regime or a task at
a time:

    python -m benchmarks.compare --plan v3-stall --dry-run                     # its plan and time estimate
    python -m benchmarks.compare --plan v3-stall --commit-each                 # 3 tasks x 5 seeds, about 3 h
    python -m benchmarks.compare --plan v3-plateau --tasks trec --commit-each  # the plateau regime, a task at a time
    python -m benchmarks.compare --plan v3-stall --quick                       # its machinery check

Benchmark v4 (issue 34; methods, recipe and budgets: :mod:`benchmarks.compare.plans`): ours against PEFT's own
starts (RANDOM, SAMPLE_VOCAB, TEXT) at equal forward-equivalent compute, resumable:

    python -m benchmarks.compare --plan v4 --dry-run                      # its plan and time estimate
    python -m benchmarks.compare --plan v4 --commit-each                  # 2 tasks x 5 seeds x 7 methods
    python -m benchmarks.compare --plan v4 --tasks trec --commit-each     # a task at a time
    python -m benchmarks.compare --plan v4 --quick                        # its machinery check
    python -m benchmarks.compare --plan v4 --report-only                  # the report from the finished runs
    python -m benchmarks.compare --plan v4 --report-only --readme         # and the README's headline from it
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import warnings
from pathlib import Path

from benchmarks.compare.methods import ALL_METHODS, RANDOM_INIT_SUFFIX, SINGLE_METHODS
from benchmarks.compare.plans import PLANS, QUICK_PLANS, V3_METHODS, V4_METHODS, Plan
from benchmarks.compare.report_v4 import write_readme_headline
from benchmarks.compare.runner import run_cells, run_plan
from benchmarks.compare.store import RESULTS_DIR, load_finished

#: Methods a plan may also run from PEFT's RANDOM init (``--methods catalyst-race@random``).
RANDOM_INIT_METHODS = tuple(f"{m}{RANDOM_INIT_SUFFIX}" for m in ALL_METHODS if m not in SINGLE_METHODS)


def select_plan(args: argparse.Namespace) -> Plan:
    """The plan named by --plan (its quick variant with --quick), narrowed by --tasks/--doers/--methods and resized
    by --seeds."""
    name = getattr(args, "plan", None) or "v2"
    plan = QUICK_PLANS[name] if args.quick else PLANS[name]
    doers = tuple(
        dataclasses.replace(d, seeds=args.seeds if args.seeds is not None else d.seeds)
        for d in plan.doers
        if not args.doers or d.doer in args.doers
    )
    wanted = set(args.methods or ())
    restart_init = args.restart_init or plan.restart_init
    return dataclasses.replace(
        plan,
        tasks=tuple(args.tasks or plan.tasks),
        doers=doers,
        methods=tuple(m for m in plan.methods if not wanted or m in wanted),
        random_init_methods=tuple(
            m for m in plan.random_init_methods if not wanted or m in wanted or f"{m}{RANDOM_INIT_SUFFIX}" in wanted
        ),
        restart_init=restart_init,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the missing runs of the plan, then write the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--plan",
        choices=sorted(PLANS),
        default="v2",
        help="v2 (issue 14, default), full (the first grid), v3-stall or v3-plateau (issue 22), v4 (issue 34)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the plan's machinery check (1 task, 1 seed, tiny budget)"
    )
    parser.add_argument("--tasks", nargs="+", choices=["rotten_tomatoes", "trec", "sms_spam"])
    parser.add_argument("--doers", nargs="+", choices=["minilm", "smollm2"])
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(dict.fromkeys([*ALL_METHODS, *V3_METHODS, *V4_METHODS, *RANDOM_INIT_METHODS])),
    )
    parser.add_argument(
        "--seeds",
        type=int,
        help="seeds per doer (default: the plan's: v2 5 and 3, full 2, v3-stall 5, v3-plateau 3, v4 5)",
    )
    parser.add_argument(
        "--restart-init", choices=["random", "text"], help="init of restart methods (default: the plan's)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="parallel worker processes (default 2: on 2 cores, two 1-thread workers beat one 2-thread process)",
    )
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: cores / jobs)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimate, run nothing")
    parser.add_argument("--report-only", action="store_true", help="write the report from finished runs only")
    parser.add_argument(
        "--commit-each",
        action="store_true",
        help="git-commit each finished run's JSON as it lands (git add -f + git commit -- <that file> only)",
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help="v4 only: also write the README's benchmark headline (between its markers) from the finished runs",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a child of --jobs
    args = parser.parse_args(argv)
    narrowed = args.quick or args.tasks or args.doers or args.methods or args.seeds
    if args.readme and (args.plan != "v4" or narrowed or args.output_dir.resolve() != RESULTS_DIR.resolve()):
        parser.error(
            "--readme writes the committed v4 plan's headline: use it with --plan v4 alone (no narrowing, the "
            "default --output-dir)"
        )
    jobs = 1 if args.worker else max(1, args.jobs)
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("transformers", "peft", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import datasets
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    torch.set_num_threads(threads)

    plan = select_plan(args)
    if args.worker:
        run_cells(plan, args.output_dir, claim=True, commit_each=args.commit_each)
        return 0
    paths = run_plan(
        plan,
        args.output_dir,
        argv,
        dry_run=args.dry_run,
        report_only=args.report_only,
        jobs=jobs,
        threads=threads,
        commit_each=args.commit_each,
    )
    if paths and args.readme:
        readme = RESULTS_DIR.parents[2] / "README.md"
        write_readme_headline(plan, load_finished(plan, args.output_dir / "cells" / plan.name), readme)
        print(f"written: the benchmark headline of {readme}", flush=True)
    return 0 if paths or args.dry_run else 1
