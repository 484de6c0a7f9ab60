"""Projection cost: time and peak extra memory to project 8/32/128 virtual tokens onto 32k and 150k x 4096 rows.

Each case runs in a fresh subprocess so the process's peak RSS (``ru_maxrss``) measures that case alone: the peak
after allocating the vocabulary is the baseline, and the figure is the peak reached during projection minus it.
The chunked projection (what peft-catalyst does) is compared with the naive one (normalise the whole vocabulary,
one score matrix).

    python -m benchmarks.projection [--rows 32000 150000] [--tokens 8 32 128] [--width 4096]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "projection.json"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_case(rows: int, tokens: int, width: int, method: str, repeats: int) -> dict:
    """Measure one case in this process (called in a subprocess by ``main``)."""
    import torch

    from peft_catalyst.projection import topk_nearest

    torch.manual_seed(0)
    vocab = torch.randn(rows, width)
    prompt = torch.randn(tokens, width)
    baseline = _peak_mib()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if method == "chunked":
            topk_nearest(prompt, vocab, top_k=1, metric="cosine")
        else:
            normed = torch.nn.functional.normalize(vocab, dim=-1)
            (torch.nn.functional.normalize(prompt, dim=-1) @ normed.T).topk(1, dim=-1)
            del normed
        times.append(time.perf_counter() - start)
    return {
        "rows": rows,
        "width": width,
        "tokens": tokens,
        "method": method,
        "seconds_median": sorted(times)[len(times) // 2],
        "seconds_min": min(times),
        "peak_extra_mib": round(_peak_mib() - baseline, 1),
        "vocab_mib": round(rows * width * 4 / 2**20, 1),
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[32000, 150000])
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["chunked", "naive"])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.case:
        rows, tokens, method = args.case.split(",")
        print(json.dumps(run_case(int(rows), int(tokens), args.width, method, args.repeats)))
        return

    results = []
    print(
        f"{'rows':>7} {'width':>5} {'tokens':>6} {'method':>8} {'median s':>9} {'peak extra MiB':>15} {'vocab MiB':>9}"
    )
    for rows in args.rows:
        for tokens in args.tokens:
            for method in args.methods:
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.projection",
                    "--case",
                    f"{rows},{tokens},{method}",
                    "--width",
                    str(args.width),
                    "--repeats",
                    str(args.repeats),
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results.append(r)
                print(
                    f"{r['rows']:>7} {r['width']:>5} {r['tokens']:>6} {r['method']:>8} "
                    f"{r['seconds_median']:>9.3f} {r['peak_extra_mib']:>15.1f} {r['vocab_mib']:>9.1f}"
                )
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": __import__("os").cpu_count(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
