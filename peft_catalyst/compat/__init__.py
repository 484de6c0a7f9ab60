"""Every use peft-catalyst makes of another library's private API, one small named function each, by library.

Upstream libraries may change their private names and layouts in any release. Keeping each use here, with the
releases it was verified on, means an upgrade breaks in one known place, and ``tests/test_compat.py`` (one test per
function, against the installed releases) says which shape moved. No other module of the package reaches a private
attribute of transformers, TRL, DeepSpeed, PEFT or torch objects (a test checks it).

- :mod:`.transformers`: ``Trainer`` column removal, the loss's item count, the trainer's logging-state guard,
  saving a checkpoint outside the training loop (the step-0 contender of ``load_best_model_at_end``), and the hook
  around the step of ``save_model`` that writes a folder (``FolderSaveHook``).
- :mod:`.trl`: ``_prepare_dataset`` (bound by parameter name) and the running metrics TRL trainers accumulate.
- :mod:`.deepspeed`: the ZeRO-3 optimizer of a parameter and its flat fp32 layout; ZeRO-1/2's parameter mapping.
- :mod:`.peft`: the supported PEFT range, the ``PeftType`` member CATALYST, and the prompt-encoder set-up hook.
- :mod:`.torch`: the module inside ``torch.compile``'s wrapper and a tensor's in-place version counter.

The submodules import nothing of peft-catalyst, and nothing of TRL or DeepSpeed (they receive their objects), so
neither needs to be installed.
"""
