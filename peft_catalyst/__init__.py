"""peft-catalyst: LLM-guided prompt tuning as a Hugging Face PEFT method.

Importing this package registers the ``CATALYST`` PEFT type, so ``get_peft_model``, ``PeftModel.from_pretrained``
and the ``AutoPeftModel*`` classes handle it like a built-in method.
"""

__version__ = "0.1.0.dev0"
