"""Fingerprints of four small command-line runs, to show that a refactor changed no output (issue 32, "Done when").

Runs ``peft-catalyst train`` on the packaged MiniLM doer (one thread, CPU, 9 steps, 3 rounds at most) in four
set-ups: ``best``; ``race`` with screening, random controls and an initial round; ``first`` with the ``blend``
restart shape; ``best`` with the ``partial`` restart shape, label anchoring and ``edit`` proposals. The mentor is a
real OpenAI-compatible server on 127.0.0.1 (``tests/loopback_openai.py``) whose reply is a pure function of the
chat messages it receives, so a change in the rendered meta-prompt changes the run as a real LLM would notice it.

Each run folder's artifacts (history, chat log, metrics, card, adapter and checkpoint files) are hashed (sha256)
after removing what is wall-clock or path dependent: timing fields (``seconds``, ``latency_s``, ``wall_time_s``,
``*_runtime``, ``*_per_second``, ...), the output folder and the server's address. Pickled files (optimizer,
scheduler, RNG state, training arguments) are hashed by their loaded content, not their bytes, so a class that
moves to another module does not count as a change. The card is also hashed section by section.

    python benchmarks/refactor_fingerprint.py --out FILE        # from a checkout root: run and write the JSON
    python benchmarks/refactor_fingerprint.py --compare A.json B.json   # print differences; exit 1 if any
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: The common options: the packaged MiniLM, a few dozen examples, 9 steps in stages of 3, checkpoints at round ends.
COMMON = [
    "--model", "minilm", "--max_steps", "9", "--catalyst_rounds", "2", "--catalyst_stage_steps", "3",
    "--train_size", "48", "--catalyst_size", "16", "--validation_size", "16", "--test_size", "16",
    "--per_device_train_batch_size", "8", "--disable_tqdm", "true", "--logging_steps", "1",
    "--catalyst_num_candidates", "2", "--catalyst_max_words", "6", "--plot", "false",
]  # fmt: skip

#: The four set-ups of issue 32's "Done when" line.
SETUPS: dict[str, list[str]] = {
    "best": [],
    "race_screening_controls_initial": [
        "--catalyst_selection", "race", "--catalyst_num_samples", "4", "--catalyst_race_controls", "1",
        "--catalyst_initial_round", "true",
    ],
    "first_blend": ["--catalyst_selection", "first", "--catalyst_restart", "blend", "--catalyst_blend_alphas", "0.5"],
    "partial_label_anchor_edit": [
        "--catalyst_restart", "partial", "--catalyst_partial_tokens", "2", "--catalyst_label_anchor", "true",
        "--catalyst_proposal", "edit",
    ],
}  # fmt: skip

#: Prompts the mentor picks from: some name the labels, some do not (so label anchoring has work to do).
POOL = [
    "Is this movie review positive or negative?",
    "Classify the sentiment of the review",
    "Did the reviewer like the film? Answer positive or negative",
    "Decide whether this review praises the movie",
    "Label the review as positive or negative",
    "Read the review and judge its tone",
    "Was the critic pleased with this movie?",
    "Sentiment of the snippet: positive or negative",
    "Tell whether the reviewer recommends the film",
    "Answer with the review's overall opinion",
]

#: JSON keys whose values are wall-clock measurements (removed before hashing, wherever they occur).
#: A key counts by its last ``/`` part (``catalyst/mentor_latency_s`` in the trainer's log history).
TIMING_KEYS = {"seconds", "latency_s", "wall_time_s", "created", "created_at", "received_at"}
TIMING_SUFFIXES = ("_runtime", "_per_second", "_seconds", "_time_s", "_latency_s")


def mentor_reply(messages: list[dict[str, Any]]) -> str:
    """A numbered list of prompts from :data:`POOL`, chosen by the sha256 of the request's messages."""
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
    picks: list[str] = []
    for byte in digest:
        text = POOL[byte % len(POOL)]
        if text not in picks:
            picks.append(text)
        if len(picks) == 4:
            break
    return "\n".join(f"{i}. {text}" for i, text in enumerate(picks, 1))


# ---------------------------------------------------------------------------------------------------------------
# Normalising and hashing
# ---------------------------------------------------------------------------------------------------------------


def _is_timing(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name in TIMING_KEYS or name.endswith(TIMING_SUFFIXES)


def _scrub(value: Any, replacements: dict[str, str]) -> Any:
    """``value`` without timing keys, with each path or address in ``replacements`` replaced by its placeholder."""
    if isinstance(value, dict):
        return {k: _scrub(v, replacements) for k, v in value.items() if not _is_timing(str(k))}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, replacements) for v in value]
    if isinstance(value, str):
        return _replace(value, replacements)
    return value


def _replace(text: str, replacements: dict[str, str]) -> str:
    for old, new in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(old, new)
    return text


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr).encode()


def _hash_json(path: Path, replacements: dict[str, str]) -> str:
    return _sha(_canonical_json(_scrub(json.loads(path.read_text()), replacements)))


def _hash_jsonl(path: Path, replacements: dict[str, str]) -> str:
    rows = [_scrub(json.loads(line), replacements) for line in path.read_text().splitlines() if line.strip()]
    return _sha(_canonical_json(rows))


def _hash_text(path: Path, replacements: dict[str, str]) -> str:
    return _sha(_replace(path.read_text(), replacements).encode())


def _tensor_digest(tensor: Any) -> dict[str, Any]:
    import torch

    t = tensor.detach().cpu().contiguous()
    flat = t.reshape(-1).to(torch.uint8) if t.dtype == torch.bool else t.reshape(-1)
    raw = flat.view(torch.uint8)
    return {"dtype": str(t.dtype), "shape": list(t.shape), "sha256": _sha(raw.numpy().tobytes())}


def _content(value: Any, replacements: dict[str, str]) -> Any:
    """A JSON-able, class-location-free picture of an unpickled object (tensors and arrays by digest)."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return _tensor_digest(value)
    if isinstance(value, np.ndarray):
        return {"dtype": str(value.dtype), "shape": list(value.shape), "sha256": _sha(value.tobytes())}
    if isinstance(value, dict):
        return {str(k): _content(v, replacements) for k, v in value.items() if not _is_timing(str(k))}
    if isinstance(value, (list, tuple)):
        return [_content(v, replacements) for v in value]
    if isinstance(value, str):
        return _replace(value, replacements)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if hasattr(value, "to_dict"):  # TrainingArguments
        return _content(value.to_dict(), replacements)
    if hasattr(value, "value") and hasattr(value, "name"):  # an enum member: its value, wherever the class lives
        return _content(value.value, replacements)
    return _replace(repr(value), replacements)


def _hash_pickle(path: Path, replacements: dict[str, str]) -> str:
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=False)
    content = _content(loaded, replacements)
    if path.name == "training_args.bin":  # TrainingArguments: logging_dir holds a time stamp under output_dir
        content.pop("logging_dir", None)
    return _sha(_canonical_json(content))


def _hash_safetensors(path: Path, replacements: dict[str, str]) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        content = {
            "metadata": f.metadata(),
            "tensors": {key: _tensor_digest(f.get_tensor(key)) for key in sorted(f.keys())},
        }
    return _sha(_canonical_json(content))


def _cell(value: Any, replacements: dict[str, str]) -> Any:
    """A cache cell: JSON text scrubbed like a JSON file, anything else as it is (paths replaced)."""
    if isinstance(value, str):
        try:
            return _scrub(json.loads(value), replacements)
        except ValueError:
            return _replace(value, replacements)
    return value


def _hash_sqlite(path: Path, replacements: dict[str, str]) -> str:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        dump = {}
        for table in tables:
            cursor = con.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - our own cache's table names
            columns = [d[0] for d in cursor.description]
            rows = [
                {c: _cell(v, replacements) for c, v in zip(columns, row) if not _is_timing(c)}
                for row in cursor.fetchall()
            ]
            dump[table] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=repr))
    finally:
        con.close()
    return _sha(_canonical_json(dump))


HASHERS: dict[str, Callable[[Path, dict[str, str]], str]] = {
    ".json": _hash_json,
    ".jsonl": _hash_jsonl,
    ".md": _hash_text,
    ".txt": _hash_text,
    ".bin": _hash_pickle,
    ".pt": _hash_pickle,
    ".pth": _hash_pickle,
    ".safetensors": _hash_safetensors,
    ".sqlite": _hash_sqlite,
}


def card_sections(text: str) -> dict[str, str]:
    """sha256 of each section of a model card (split at headings), keyed by its heading, in order."""
    sections: dict[str, list[str]] = {"(front matter and preamble)": []}
    current = "(front matter and preamble)"
    for line in text.splitlines():
        if line.startswith("#"):
            current = line.strip()
            sections.setdefault(current, [])
        sections[current].append(line)
    return {heading: _sha("\n".join(lines).encode()) for heading, lines in sections.items()}


def fingerprint_folder(out: Path, replacements: dict[str, str]) -> dict[str, Any]:
    """Every file of a run folder hashed by :data:`HASHERS` (plain bytes otherwise), keyed by relative path."""
    files: dict[str, str] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if rel.startswith("runs/") or rel.endswith(("-wal", "-shm")):  # event files; SQLite's own journal
            continue
        hasher = HASHERS.get(path.suffix)
        files[rel] = hasher(path, replacements) if hasher else _sha(path.read_bytes())
    card = out / "README.md"
    sections = card_sections(_replace(card.read_text(), replacements)) if card.is_file() else {}
    return {"files": files, "card_sections": sections}


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------


def _environment() -> dict[str, str]:
    """The runs' environment: offline, one thread, this checkout's code first on ``sys.path``."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENAI_API_KEY": "sk-loopback-0123456789",
        "PYTHONHASHSEED": "0",
        "TOKENIZERS_PARALLELISM": "false",
    }


#: Runs the command line with this checkout's card templates. An editable install maps the package
#: ``peft_catalyst.model_cards`` to the ``model_cards/`` folder of the checkout it was made from, whatever
#: checkout the code runs in; a checkout that keeps the folder at its root gets it pinned here.
RUNNER = """
import importlib.util, pathlib, sys
cards = pathlib.Path.cwd() / "model_cards"
if (cards / "__init__.py").is_file() and not (pathlib.Path.cwd() / "peft_catalyst" / "model_cards").is_dir():
    spec = importlib.util.spec_from_file_location(
        "peft_catalyst.model_cards", cards / "__init__.py", submodule_search_locations=[str(cards)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["peft_catalyst.model_cards"] = module
    spec.loader.exec_module(module)
if sys.argv[1:2] == ["--where"]:
    import importlib.resources, peft_catalyst
    print(peft_catalyst.__file__)
    print(importlib.resources.files("peft_catalyst.model_cards") / "catalyst_section.md")
    raise SystemExit(0)
from peft_catalyst.app.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def check_checkout_code() -> None:
    """Stop unless the runs use this checkout's ``peft_catalyst`` and card templates."""
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, "--where"], cwd=ROOT, env=_environment(), capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    outside = [f for f in result.stdout.split() if not Path(f).resolve().is_relative_to(ROOT)]
    if outside:
        raise SystemExit(f"the runs would use code from outside {ROOT}: {outside}")


def run_setup(name: str, extra: list[str], work: Path, base_url: str) -> dict[str, Any]:
    """One ``peft-catalyst train`` run in a fresh process (one thread, offline); its folder's fingerprint."""
    out = work / name
    env = _environment()
    args = [*COMMON, *extra, "--mentor", "openai:fingerprint-model", "--mentor_base_url", base_url]
    cmd = [sys.executable, "-c", RUNNER, "train", *args, "--output_dir", str(out)]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"set-up {name!r} failed with exit code {result.returncode}")
    replacements = {str(out): "<output_dir>", base_url: "<mentor_base_url>", str(work): "<work>", str(ROOT): "<root>"}
    return {"args": args[: -2], "seconds": round(seconds, 1), **fingerprint_folder(out, replacements)}


def run_all(setups: list[str], keep: Path | None = None) -> dict[str, Any]:
    """Run the named set-ups against one loopback mentor (run folders under ``keep`` if given, else removed)."""
    sys.path.insert(0, str(ROOT))
    from tests.loopback_openai import LoopbackOpenAIServer, chat_reply

    def reply(request: Any) -> Any:
        text = mentor_reply(request.messages)
        return chat_reply(text, model="fingerprint-model", request_id="chatcmpl-" + _sha(text.encode())[:12])

    check_checkout_code()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="refactor_fingerprint_") as tmp, LoopbackOpenAIServer() as server:
        server.set_reply(reply)
        work = Path(tmp) if keep is None else keep.resolve()
        for name in setups:
            print(f"running {name} ...", flush=True)
            results[name] = run_setup(name, SETUPS[name], work, server.base_url)
            print(f"  {len(results[name]['files'])} files in {results[name]['seconds']} s", flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return {"commit": commit.stdout.strip() or None, "setups": results}


# ---------------------------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------------------------


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """One line per set-up, file or card section whose hash differs or that only one side has."""
    lines = []
    for name in sorted(set(a["setups"]) | set(b["setups"])):
        sa, sb = a["setups"].get(name), b["setups"].get(name)
        if sa is None or sb is None:
            lines.append(f"{name}: only in {'B' if sa is None else 'A'}")
            continue
        if sa.get("args") != sb.get("args"):
            lines.append(f"{name}: different options {sa.get('args')} vs {sb.get('args')}")
        for kind in ("files", "card_sections"):
            fa, fb, what = sa.get(kind, {}), sb.get(kind, {}), kind[:-1].replace("_", " ")
            for key in sorted(set(fa) | set(fb), key=str):
                if key not in fa or key not in fb:
                    lines.append(f"{name}: {what} {key} only in {'B' if key not in fa else 'A'}")
                elif fa[key] != fb[key]:
                    lines.append(f"{name}: {what} {key} differs")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the fingerprint JSON here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two fingerprint files")
    parser.add_argument("--keep", type=Path, help="keep the run folders under this (new) folder, for inspection")
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS), help="default: all four")
    args = parser.parse_args(argv)
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        lines = differences(a, b)
        print("\n".join(lines) if lines else "identical: every set-up, file and card section")
        return 1 if lines else 0
    if args.out is None:
        parser.error("pass --out FILE (or --compare A.json B.json)")
    start = time.perf_counter()
    document = run_all(args.setups, args.keep)
    document["seconds"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out} in {document['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
