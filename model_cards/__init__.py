"""Model-card templates of peft-catalyst adapters (Jinja, rendered by ``peft_catalyst.hub``).

This folder is installed as the package ``peft_catalyst.model_cards`` (``[tool.setuptools.package-dir]`` in
``pyproject.toml``), so an installed wheel reads the templates with ``importlib.resources`` like an editable checkout.

- ``adapter_card.md``: a whole new card: the YAML block (``{{ card_data }}``, rendered by ``huggingface_hub``), a
  title, and the peft-catalyst section.
- ``catalyst_section.md``: the section peft-catalyst owns, between ``<!-- peft-catalyst:begin -->`` and
  ``<!-- peft-catalyst:end -->``; pushing again replaces only this part of an existing card.
"""
