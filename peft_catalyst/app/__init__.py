"""The command-line application and its packaged demo: ``peft-catalyst train``, packaged tasks and data, offline
asset loading and plotting. It sits above the library: nothing in ``peft_catalyst`` outside this package imports it.
"""
