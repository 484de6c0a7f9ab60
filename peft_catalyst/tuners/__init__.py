"""PEFT tuner types added by peft-catalyst (laid out like ``peft.tuners``)."""
