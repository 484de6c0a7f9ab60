"""Does the mentor help? The catalyst against the right baselines, with seeds, spread and paired intervals.

The command (``python -m benchmarks.compare``; its plans, methods and flags: :mod:`benchmarks.compare.cli`) is a set
of plans on top of the comparison machinery that ``peft-catalyst compare`` uses too (:mod:`peft_catalyst.app.compare`:
the statistics, the record store, the run schedule, the environment), in modules of one idea each:

- :mod:`~benchmarks.compare.methods`: what a run is (methods, a doer's budget, a cell);
- :mod:`~benchmarks.compare.costs`: the cost model (predicted wall time of a run);
- :mod:`~benchmarks.compare.plans`: the grids (benchmark v3's methods and regimes too) and the printed plan with its
  estimate;
- :mod:`~benchmarks.compare.run`: one run, trained and recorded;
- :mod:`~benchmarks.compare.store`: a run's settings and place in the record store, and what a matched single needs;
- :mod:`~benchmarks.compare.summary`: the statistics of a grid;
- :mod:`~benchmarks.compare.report`: the JSON, Markdown and PNG report (v3's sections too);
- :mod:`~benchmarks.compare.formats`: how every report writes a paired difference and a wins/rounds count;
- :mod:`~benchmarks.compare.runner`: running a plan (in order, or in worker processes), then the report;
- :mod:`~benchmarks.compare.pooled`: benchmark v3's answer, the regimes' reports pooled in one table;
- :mod:`~benchmarks.compare.report_v4`: benchmark v4's report (ours against the best PEFT start at equal compute).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.compare.cli import main, select_plan  # noqa: E402
from benchmarks.compare.costs import (  # noqa: E402
    COSTS,
    MENTOR_CALL_S,
    RACE_STEPS_FALLBACK,
    TASK_SCALE,
    TWO_THREAD_SPEEDUP,
    USABLE_CANDIDATES,
    USABLE_COUNTS,
    estimate_cell_seconds,
    expected_race,
    expected_total_steps,
    expected_usable,
    llm_only_schedule,
    race_shape,
    resolution_line,
    thread_speedup,
)
from benchmarks.compare.methods import (  # noqa: E402
    ALL_METHODS,
    BENCH_VERSION,
    LLM_METHODS,
    METHODS,
    RANDOM_INIT_SUFFIX,
    ROUND_METHODS,
    SINGLE_METHODS,
    V2_METHODS,
    Cell,
    DoerPlan,
    MethodSpec,
    method_spec,
)
from benchmarks.compare.plans import (  # noqa: E402
    BUDGET_SLACK,
    FULL_PLAN,
    PLANS,
    QUICK_PLAN,
    QUICK_PLANS,
    V2_DOERS,
    V2_PLAN,
    V2_QUICK_PLAN,
    V3_CONTRASTS,
    V3_METHODS,
    V3_PLATEAU_PLAN,
    V3_STALL_PLAN,
    V4_CONTRASTS,
    V4_METHODS,
    V4_PEFT_STARTS,
    V4_PLAN,
    V4_QUICK_PLAN,
    V4_RECIPE,
    Plan,
    V4Recipe,
    plan_lines,
    seeds_that_fit,
    v3_specs,
    v4_specs,
)
from benchmarks.compare.report import (  # noqa: E402
    METHOD_DEFINITIONS,
    METHOD_DEFINITIONS_V2,
    environment,
    markdown,
    markdown_v2,
    plot,
    write_report,
)
from benchmarks.compare.report_v4 import write_report_v4  # noqa: E402
from benchmarks.compare.run import embedded_mentor, llm_usage, run_cell  # noqa: E402
from benchmarks.compare.runner import run_cells, run_plan  # noqa: E402
from benchmarks.compare.store import (  # noqa: E402
    RESULTS_DIR,
    cell_path,
    cell_settings,
    claim_cell,
    commit_run,
    compute_steps,
    dependency,
    load_finished,
    lock_holder_alive,
    matched_steps,
)
from benchmarks.compare.summary import (  # noqa: E402
    HEADLINE_CONTRASTS,
    headline_contrasts,
    per_method_costs,
    summarize,
)

__all__ = [
    "ALL_METHODS",
    "BENCH_VERSION",
    "BUDGET_SLACK",
    "COSTS",
    "FULL_PLAN",
    "HEADLINE_CONTRASTS",
    "LLM_METHODS",
    "MENTOR_CALL_S",
    "METHODS",
    "METHOD_DEFINITIONS",
    "METHOD_DEFINITIONS_V2",
    "PLANS",
    "QUICK_PLAN",
    "QUICK_PLANS",
    "RACE_STEPS_FALLBACK",
    "RANDOM_INIT_SUFFIX",
    "RESULTS_DIR",
    "ROUND_METHODS",
    "SINGLE_METHODS",
    "TASK_SCALE",
    "TWO_THREAD_SPEEDUP",
    "USABLE_CANDIDATES",
    "USABLE_COUNTS",
    "V2_DOERS",
    "V2_METHODS",
    "V2_PLAN",
    "V2_QUICK_PLAN",
    "V3_CONTRASTS",
    "V3_METHODS",
    "V3_PLATEAU_PLAN",
    "V3_STALL_PLAN",
    "V4_CONTRASTS",
    "V4_METHODS",
    "V4_PEFT_STARTS",
    "V4_PLAN",
    "V4_QUICK_PLAN",
    "V4_RECIPE",
    "Cell",
    "DoerPlan",
    "MethodSpec",
    "Plan",
    "V4Recipe",
    "cell_path",
    "cell_settings",
    "claim_cell",
    "commit_run",
    "compute_steps",
    "dependency",
    "embedded_mentor",
    "environment",
    "estimate_cell_seconds",
    "expected_race",
    "expected_total_steps",
    "expected_usable",
    "headline_contrasts",
    "llm_only_schedule",
    "llm_usage",
    "load_finished",
    "lock_holder_alive",
    "main",
    "markdown",
    "markdown_v2",
    "matched_steps",
    "method_spec",
    "per_method_costs",
    "plan_lines",
    "plot",
    "race_shape",
    "resolution_line",
    "run_cell",
    "run_cells",
    "run_plan",
    "seeds_that_fit",
    "select_plan",
    "summarize",
    "thread_speedup",
    "v3_specs",
    "v4_specs",
    "write_report",
    "write_report_v4",
]
