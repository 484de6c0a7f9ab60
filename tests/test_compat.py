"""The private upstream API that ``peft_catalyst.compat`` relies on, one test per function, against the installed
releases: each fails with a message naming the upstream shape that moved and the compat function to revisit.

The functions' behaviour inside whole runs is covered elsewhere (races and rounds: test_race.py, test_trainer.py;
SFTTrainer: test_integrations.py; ZeRO-3: test_distributed.py); these tests pin the shapes themselves.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import peft_model
from peft.utils import PeftType
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import CallbackHandler, TrainerControl

import peft_catalyst  # noqa: F401  (importing the package registers CATALYST: the prompt-encoder hook)
from peft_catalyst.compat import deepspeed as ds_compat
from peft_catalyst.compat import peft as peft_compat
from peft_catalyst.compat import torch as torch_compat
from peft_catalyst.compat import transformers as tf_compat
from peft_catalyst.compat import trl as trl_compat
from tests import tiny

PACKAGE = Path(__file__).resolve().parent.parent / "peft_catalyst"


def _moved(library: str, shape: str, function: str) -> str:
    return f"{library} changed {shape}: revisit peft_catalyst.compat.{function} (verified on the release it names)"


# ---------------------------------------------------------------------------------------------------------------
# The rule itself: no other module reaches these private names
# ---------------------------------------------------------------------------------------------------------------

PRIVATE_NAMES = (
    # transformers
    "_remove_unused_columns",
    "_get_collator_with_removed_columns",
    "_get_num_items_in_batch",
    "_prepare_inputs",
    "should_log",
    "_internal_call",
    "_save_checkpoint",
    # TRL
    "_prepare_dataset",
    "_metrics",
    "_total_train_tokens",
    # DeepSpeed
    "_z3_optimizer",
    "_hp_mapping",
    "_swappable_optimizer_subgroup",
    "grad_position",
    "fp32_partitioned_groups_flat",
    "sub_group_to_group_id",
    # PEFT
    "_setup_prompt_encoder",
    "PEFT_TYPE_TO_TUNER_MAPPING",
    "_member_map_",
    "_value2member_map_",
    "_member_names_",
    "_BaseAutoPeftModel",
    # transformers, reached while use_packaged_models is on
    "_adjust_missing_and_unexpected_keys",
    # torch
    "_orig_mod",
    "_version",
)


def test_private_upstream_names_appear_only_in_the_compat_package():
    pattern = re.compile(r"(?<![\w])(" + "|".join(PRIVATE_NAMES) + r")\b")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("compat/"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            names = set(pattern.findall(line))
            if names:
                found.append(f"{relative}:{number}: {sorted(names)}")
    assert not found, "private upstream API outside peft_catalyst/compat/ (add a named function there):\n" + "\n".join(
        found
    )


#: Where code outside compat/ is scanned for private upstream names (the library, and the scripts shipped beside it).
SCANNED = ("peft_catalyst", "benchmarks", "examples")
UPSTREAM = ("transformers", "trl", "peft", "deepspeed", "torch")

#: Private names that are ours although an upstream class has one of the same name, or an upstream private name
#: reached knowingly outside compat/: (file, name) -> why.
ALLOWED_PRIVATE = {
    ("peft_catalyst/mentors/base.py", "_lock"): "MentorUsage's own lock",
    ("benchmarks/checkpoint_cost.py", "_save_checkpoint"): (
        "the benchmark times Trainer._save_checkpoint itself (pinned by test_save_checkpoint below)"
    ),
}


def _upstream_classes() -> list[type]:
    """The upstream classes peft-catalyst subclasses or whose objects it handles."""
    from peft import PeftConfig, PeftModel, PeftModelForCausalLM, PromptTuningConfig
    from peft.tuners.prompt_tuning import PromptEmbedding
    from transformers import (
        GenerationMixin,
        PretrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        TrainerState,
    )

    classes = [
        Trainer, TrainingArguments, TrainerCallback, TrainerControl, TrainerState, PreTrainedModel, PretrainedConfig,
        PreTrainedTokenizerBase, GenerationMixin, PeftModel, PeftModelForCausalLM, PeftConfig, PromptTuningConfig,
        PromptEmbedding, torch.nn.Module, torch.nn.Parameter, torch.Tensor, torch.optim.Optimizer,
        torch.optim.lr_scheduler.LRScheduler, torch.utils.data.DataLoader, torch.Generator,
    ]  # fmt: skip
    try:
        from trl import SFTConfig, SFTTrainer

        classes += [SFTTrainer, SFTConfig]
    except ImportError:  # pragma: no cover - TRL is optional
        pass
    try:
        from deepspeed.runtime.engine import DeepSpeedEngine
        from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3

        classes += [DeepSpeedEngine, DeepSpeedZeroOptimizer_Stage3]
    except ImportError:  # pragma: no cover - DeepSpeed is optional
        pass
    return classes


def _upstream_private_names() -> set[str]:
    """Private attribute names of those classes (and their upstream bases): class attributes and methods, and
    every ``self._name =`` in the modules that define them (instance attributes such as ``_name_or_path``)."""
    names, files = set(), set()
    assigned = re.compile(r"self\.(_[A-Za-z]\w*)\s*(?::[^=\n]*)?=")
    for cls in _upstream_classes():
        for klass in cls.__mro__:
            if klass.__module__.split(".")[0] not in UPSTREAM:
                continue
            names.update(n for n in vars(klass) if _private(n))
            source = inspect.getsourcefile(klass)
            if source:
                files.add(source)
    for source in files:
        names.update(assigned.findall(Path(source).read_text(encoding="utf-8")))
    return names


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_upstream_uses(path: Path, upstream_names: set[str]) -> list[tuple[int, str, str]]:
    """``(line, name, how)`` for each private upstream name the file reaches: imported from an upstream package, read
    on an upstream import (``LlamaForCausalLM._from_config``), defined as a method of the same name (an override), or
    read or set on any object, also by ``getattr``-style string, when an upstream class has an attribute of that name
    (``config._name_or_path``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update((a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] in UPSTREAM)
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in UPSTREAM:
            imported.update(a.asname or a.name for a in node.names)
            found += [(node.lineno, a.name, "imported") for a in node.names if _private(a.name)]

    def rooted_upstream(node: ast.AST) -> bool:
        while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
            node = node.func if isinstance(node, ast.Call) else node.value
        return isinstance(node, ast.Name) and node.id in imported

    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            found += [(m.lineno, m.name, "overridden") for m in methods if m.name in upstream_names]
            continue
        if isinstance(node, ast.Attribute) and _private(node.attr):
            name, target = node.attr, node.value
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):  # fmt: skip
            name, target = node.args[1].value, node.args[0]
        else:
            continue
        if rooted_upstream(target):
            found.append((node.lineno, name, "reached on an upstream import"))
        elif name in upstream_names:
            found.append((node.lineno, name, "an upstream attribute name"))
    return found


def test_no_private_upstream_attribute_is_reached_outside_the_compat_package():
    """Any underscore name of transformers, TRL, PEFT, DeepSpeed or torch objects that the library, benchmarks or
    examples reach goes through a named function of peft_catalyst/compat/ (or is in ``ALLOWED_PRIVATE`` with why)."""
    root = PACKAGE.parent
    upstream_names = _upstream_private_names()
    assert {"_save", "_name_or_path", "_from_config", "_metrics"} <= upstream_names  # the scan sees what it must
    found = []
    for folder in SCANNED:
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            if relative.startswith("peft_catalyst/compat/"):
                continue
            found += [
                f"{relative}:{line}: {name} ({how})"
                for line, name, how in _private_upstream_uses(path, upstream_names)
                if (relative, name) not in ALLOWED_PRIVATE
            ]
    assert not found, "private upstream API outside peft_catalyst/compat/ (add a named function there):\n" + "\n".join(
        found
    )


def test_the_private_name_scan_sees_every_form(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from transformers import LlamaForCausalLM, Trainer\n"
        "from peft.auto import _BaseAutoPeftModel\n"
        "import torch\n"
        "class T(Trainer):\n"
        "    def _save(self, output_dir=None, state_dict=None):\n"
        "        self._own_helper()\n"
        "def f(model, config):\n"
        "    LlamaForCausalLM._from_config(config)\n"
        "    torch._C\n"
        "    config._name_or_path = 'x'\n"
        "    return getattr(model.config, '_name_or_path', '') or model._own\n"
    )
    found = _private_upstream_uses(probe, {"_save", "_name_or_path", "_from_config"})
    assert sorted(found) == [
        (2, "_BaseAutoPeftModel", "imported"),
        (5, "_save", "overridden"),
        (8, "_from_config", "reached on an upstream import"),
        (9, "_C", "reached on an upstream import"),
        (10, "_name_or_path", "an upstream attribute name"),
        (11, "_name_or_path", "an upstream attribute name"),
    ]


# ---------------------------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    """A plain ``Trainer`` around the tiny BERT classifier (nothing is trained)."""
    tok = tiny.bpe_tokenizer()
    args = TrainingArguments(str(tmp_path_factory.mktemp("compat")), report_to=[], use_cpu=True)
    return Trainer(
        model=tiny.tiny_bert_seq_cls(tok),
        args=args,
        processing_class=tok,
        data_collator=DataCollatorWithPadding(tok),
    )


def test_remove_unused_columns(trainer):
    dataset = Dataset.from_dict({"input_ids": [[5, 6]], "label": [1], "note": ["not a model input"]})
    kept = tf_compat.remove_unused_columns(trainer, dataset, description="compat")
    assert set(kept.column_names) == {"input_ids", "label"}, _moved(
        "transformers", "Trainer._remove_unused_columns(dataset, description=)", "transformers.remove_unused_columns"
    )


def test_collator_with_removed_columns(trainer):
    collate = tf_compat.collator_with_removed_columns(trainer, trainer.data_collator, description="compat")
    batch = collate([{"input_ids": [5, 6], "label": 1, "note": "x"}, {"input_ids": [7], "label": 0, "note": "y"}])
    assert "note" not in batch and batch["input_ids"].shape == (2, 2), _moved(
        "transformers",
        "Trainer._get_collator_with_removed_columns(collator, description=)",
        "transformers.collator_with_removed_columns",
    )


def test_num_items_in_batch(trainer):
    batches = [{"labels": torch.tensor([[1, -100, 2]])}, {"labels": torch.tensor([[3, 4, -100]])}]
    count = tf_compat.num_items_in_batch(trainer, batches)
    assert int(count) == 4, _moved(
        "transformers", "Trainer._get_num_items_in_batch(batch_samples, device)", "transformers.num_items_in_batch"
    )


def test_prepare_inputs(trainer):
    batch = {"input_ids": torch.tensor([[5, 6]]), "labels": torch.tensor([1])}
    prepared = tf_compat.prepare_inputs(trainer, batch)
    assert prepared["input_ids"].device == trainer.args.device and torch.equal(prepared["labels"], batch["labels"]), (
        _moved("transformers", "Trainer._prepare_inputs(inputs)", "transformers.prepare_inputs")
    )


def test_trainer_logging_untouched(trainer):
    assert "should_log" in TrainerControl.__dataclass_fields__, _moved(
        "transformers", "TrainerControl.should_log", "transformers.trainer_logging_untouched"
    )
    assert "control.should_log = False" in inspect.getsource(CallbackHandler.on_log), _moved(
        "transformers", "CallbackHandler.on_log (it cleared should_log)", "transformers.trainer_logging_untouched"
    )
    trainer.control.should_log = True
    trainer._metrics = {"train": {"entropy": [1.0]}}  # what a TRL trainer accumulates between logs
    with tf_compat.trainer_logging_untouched(trainer):
        trainer.control.should_log = False
        trainer._metrics["train"]["entropy"].append(9.0)
    assert trainer.control.should_log is True and trainer._metrics == {"train": {"entropy": [1.0]}}
    del trainer._metrics


# ---------------------------------------------------------------------------------------------------------------
# TRL
# ---------------------------------------------------------------------------------------------------------------


def test_prepare_dataset_binds_every_parameter_of_sft_trainer_by_name():
    trl = pytest.importorskip("trl")
    params = inspect.signature(trl.SFTTrainer._prepare_dataset).parameters
    fillable = {"self", "dataset", "processing_class", "args", "packing", "formatting_func", "dataset_name"}
    required = {n for n, p in params.items() if p.default is p.empty and p.kind is not p.VAR_KEYWORD}
    assert required <= fillable, _moved("TRL", f"SFTTrainer._prepare_dataset{tuple(params)}", "trl.prepare_dataset")
    assert {"dataset", "dataset_name"} <= set(params), _moved(
        "TRL", "SFTTrainer._prepare_dataset's parameter names", "trl.prepare_dataset"
    )


def test_prepare_dataset_names_what_it_cannot_fill():
    """A release whose method needs a parameter we do not know fails with a line that says what to do."""

    class NewerTrainer:
        processing_class, args = None, None

        def _prepare_dataset(self, dataset, processing_class, args, packing, tokenizer_kwargs, dataset_name):
            return dataset

    assert trl_compat.can_prepare_dataset(NewerTrainer()) and not trl_compat.can_prepare_dataset(object())
    with pytest.raises(TypeError, match=r"cannot fill \['tokenizer_kwargs'\].*catalyst_dataset="):
        trl_compat.prepare_dataset(NewerTrainer(), [], packing=False, dataset_name="catalyst")


def test_running_metric_attributes_of_sft_trainer():
    trl = pytest.importorskip("trl")
    source = inspect.getsource(trl.SFTTrainer.__init__)
    for name in trl_compat.RUNNING_METRIC_ATTRIBUTES:
        assert f"self.{name} =" in source, _moved("TRL", f"SFTTrainer.{name}", "trl.RUNNING_METRIC_ATTRIBUTES")


def test_saved_and_restored_running_metrics(trainer):
    trainer._total_train_tokens = 12
    saved = trl_compat.saved_running_metrics(trainer)
    trainer._total_train_tokens = 40
    trl_compat.restore_running_metrics(trainer, saved)
    assert saved == {"_total_train_tokens": 12} and trainer._total_train_tokens == 12
    del trainer._total_train_tokens
    assert trl_compat.saved_running_metrics(trainer) == {}  # a plain Trainer accumulates none


# ---------------------------------------------------------------------------------------------------------------
# DeepSpeed (the functions run on a real ZeRO-3 engine in test_distributed.py; here the layout they read)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage3_source():
    stage3 = pytest.importorskip("deepspeed.runtime.zero.stage3")
    return stage3, inspect.getsource(stage3.DeepSpeedZeroOptimizer_Stage3)


def test_zero3_optimizer(stage3_source):
    _, source = stage3_source
    assert "p._z3_optimizer = self" in source, _moved("DeepSpeed", "param._z3_optimizer", "deepspeed.zero3_optimizer")
    plain = torch.nn.Parameter(torch.zeros(2))
    assert ds_compat.zero3_optimizer(plain) is None


def test_has_zero12_mapping():
    linkage = pytest.importorskip("deepspeed.utils.mixed_precision_linkage")
    assert "lp_param._hp_mapping = " in inspect.getsource(linkage), _moved(
        "DeepSpeed", "param._hp_mapping", "deepspeed.has_zero12_mapping"
    )
    assert not ds_compat.has_zero12_mapping(torch.nn.Parameter(torch.zeros(2)))


def test_zero3_grad_position(stage3_source):
    stage3, source = stage3_source
    assert "self.grad_position[param_id] = [int(i), int(current_offset), int(num_elements)]" in source, _moved(
        "DeepSpeed", "grad_position's (sub_group, offset, num_elements) entries", "deepspeed.zero3_grad_position"
    )
    assert list(inspect.signature(stage3.DeepSpeedZeroOptimizer_Stage3.get_param_id).parameters) == ["self", "param"]


def test_zero3_flat_partition(stage3_source):
    _, source = stage3_source
    assert "self.fp32_partitioned_groups_flat.append(" in source, _moved(
        "DeepSpeed", "fp32_partitioned_groups_flat (a list by sub-group)", "deepspeed.zero3_flat_partition"
    )


def test_zero3_param_group_index(stage3_source):
    _, source = stage3_source
    assert "self.sub_group_to_group_id[sub_group_idx] =" in source, _moved(
        "DeepSpeed", "sub_group_to_group_id", "deepspeed.zero3_param_group_index"
    )


def test_zero3_subgroup_offloaded(stage3_source):
    stage3, _ = stage3_source
    method = getattr(stage3.DeepSpeedZeroOptimizer_Stage3, "_swappable_optimizer_subgroup", None)
    assert method is not None and list(inspect.signature(method).parameters) == ["self", "sub_group_id"], _moved(
        "DeepSpeed", "_swappable_optimizer_subgroup(sub_group_id)", "deepspeed.zero3_subgroup_offloaded"
    )


# ---------------------------------------------------------------------------------------------------------------
# PEFT
# ---------------------------------------------------------------------------------------------------------------


def test_extend_peft_type():
    for table in ("_member_map_", "_value2member_map_", "_member_names_"):
        assert hasattr(PeftType, table), _moved("PEFT", f"PeftType.{table} (enum internals)", "peft.extend_peft_type")
    member = peft_compat.extend_peft_type("CATALYST")  # registered on import: idempotent
    assert member is PeftType["CATALYST"] is PeftType("CATALYST") and member in list(PeftType)
    assert member == "CATALYST" and isinstance(member, str) and member.value == "CATALYST"


def test_wrap_setup_prompt_encoder():
    wrapped = peft_model.PeftModel._setup_prompt_encoder
    original = inspect.unwrap(wrapped)
    assert list(inspect.signature(original).parameters) == ["self", "adapter_name"], _moved(
        "PEFT", "PeftModel._setup_prompt_encoder(adapter_name)", "peft.wrap_setup_prompt_encoder"
    )
    assert getattr(wrapped, "_catalyst_patched", False)
    peft_compat.wrap_setup_prompt_encoder(lambda original, model, name: None)  # idempotent: the first wrapper stays
    assert peft_model.PeftModel._setup_prompt_encoder is wrapped


def test_auto_peft_model_base():
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

    base = peft_compat.auto_peft_model_base()
    assert "from_pretrained" in vars(base), _moved(
        "PEFT", "_BaseAutoPeftModel.from_pretrained", "peft.auto_peft_model_base"
    )
    assert issubclass(AutoPeftModelForCausalLM, base) and issubclass(AutoPeftModelForSequenceClassification, base)
    assert "from_pretrained" not in vars(AutoPeftModelForCausalLM)  # inherited: one wrapper covers every Auto class


def test_load_report_adjustment():
    owner, name = tf_compat.load_report_adjustment()
    method = inspect.unwrap(getattr(owner, name))
    assert list(inspect.signature(method).parameters) == ["self", "loading_info"], _moved(
        "transformers", f"PreTrainedModel.{name}(loading_info)", "transformers.load_report_adjustment"
    )
    assert f".{name}(loading_info)" in inspect.getsource(owner._finalize_model_loading)


def test_prompt_tuning_tuner():
    mapping = peft_model.PEFT_TYPE_TO_TUNER_MAPPING
    before = mapping[PeftType.PROMPT_TUNING]
    assert before.__name__ == "PromptEmbedding", _moved(
        "PEFT", "PEFT_TYPE_TO_TUNER_MAPPING[PROMPT_TUNING]", "peft.prompt_tuning_tuner"
    )
    with pytest.raises(RuntimeError), peft_compat.prompt_tuning_tuner(torch.nn.Identity):
        assert mapping[PeftType.PROMPT_TUNING] is torch.nn.Identity
        raise RuntimeError("restored also on error")
    assert mapping[PeftType.PROMPT_TUNING] is before


def test_supported_peft_range_is_the_installed_one():
    import peft
    from packaging.specifiers import SpecifierSet

    assert peft.__version__ in SpecifierSet(",".join(peft_compat.SUPPORTED_PEFT)), peft_compat.VERIFIED


# ---------------------------------------------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------------------------------------------


def test_compiled_inner():
    module = torch.nn.Linear(2, 2)
    assert torch_compat.compiled_inner(torch.compile(module)) is module, _moved(
        "torch", "torch.compile's OptimizedModule._orig_mod", "torch.compiled_inner"
    )
    assert torch_compat.compiled_inner(module) is None


def test_tensor_version():
    tensor = torch.zeros(3)
    before = torch_compat.tensor_version(tensor)
    tensor.add_(1)
    assert torch_compat.tensor_version(tensor) > before, _moved(
        "torch", "Tensor._version (the in-place version counter)", "torch.tensor_version"
    )
    assert torch_compat.tensor_version(tensor) == torch_compat.tensor_version(tensor)  # reading does not bump it


def test_save_checkpoint(tmp_path):
    """``Trainer._save_checkpoint(model, trial)`` writes ``checkpoint-{global_step}`` outside the training loop, and
    upstream still neither ranks the step-0 evaluation nor points ``best_model_checkpoint`` at a step-0 checkpoint
    (why :mod:`peft_catalyst.trainer.keep_best` saves and records the start itself)."""
    assert list(inspect.signature(Trainer._save_checkpoint).parameters) == ["self", "model", "trial"], _moved(
        "transformers", "Trainer._save_checkpoint(model, trial)", "transformers.save_checkpoint"
    )
    tok = tiny.bpe_tokenizer()
    args = TrainingArguments(
        str(tmp_path), max_steps=2, eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
        eval_on_start=True, load_best_model_at_end=True, report_to=[], use_cpu=True, learning_rate=0.0,
    )  # fmt: skip
    data = tiny.toy_reviews(tok, 8, seed=1)
    trainer = Trainer(
        model=tiny.tiny_bert_seq_cls(tok), args=args, train_dataset=data, eval_dataset=data,
        data_collator=DataCollatorWithPadding(tok),
    )  # fmt: skip
    seen = []

    class AtStart(TrainerCallback):
        def on_evaluate(self, args, state, control, **kwargs):
            if state.global_step == 0:
                seen.append(state.best_metric)
                tf_compat.save_checkpoint(trainer)

    trainer.add_callback(AtStart())
    trainer.train()
    assert seen == [None], "transformers now ranks the eval_on_start evaluation: keep_best's step-0 record may go"
    assert (tmp_path / "checkpoint-0" / "trainer_state.json").is_file(), _moved(
        "transformers", "Trainer._save_checkpoint's folder", "transformers.save_checkpoint"
    )
    # lr 0: every evaluation ties with the start, and Trainer's strict comparison keeps its first ranked one
    assert trainer.state.best_global_step == 1 and trainer.state.best_model_checkpoint.endswith("checkpoint-1")


def test_folder_save_hook(tmp_path):
    """``FolderSaveHook`` wraps the step of ``Trainer.save_model`` that writes the folder: the context is open while
    the weights are written, and the after-hook sees them, for a final save and a checkpoint alike."""
    import os

    assert list(inspect.signature(Trainer._save).parameters) == ["self", "output_dir", "state_dict"], _moved(
        "transformers", "Trainer._save(output_dir, state_dict)", "transformers.FolderSaveHook"
    )
    events = []

    class Hooked(tf_compat.FolderSaveHook, Trainer):
        @contextlib.contextmanager
        def _writing(self):
            events.append("enter")
            yield
            events.append("exit")

        def saving_folder(self):
            return self._writing()

        def saved_folder(self, output_dir):
            events.append(sorted(os.listdir(output_dir)))

    tok = tiny.bpe_tokenizer()
    args = TrainingArguments(
        str(tmp_path / "out"), max_steps=1, save_strategy="steps", save_steps=1, report_to=[], use_cpu=True
    )
    trainer = Hooked(
        model=tiny.tiny_bert_seq_cls(tok), args=args, train_dataset=tiny.toy_reviews(tok, 4, seed=1),
        data_collator=DataCollatorWithPadding(tok),
    )  # fmt: skip
    trainer.train()  # checkpoint-1
    trainer.save_model(str(tmp_path / "final"))
    checkpoint, final = events[:3], events[3:]
    for written in (checkpoint, final):
        assert written[0] == "enter" and written[1] == "exit" and "model.safetensors" in written[2], _moved(
            "transformers", "Trainer.save_model's call of _save", "transformers.FolderSaveHook"
        )
