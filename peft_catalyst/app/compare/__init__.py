"""``peft-catalyst compare``: does the mentor help on my task? Paired runs of plain prompt tuning, random restarts
and the mentor, per seed, with intervals; and the machinery the benchmark's plans (``benchmarks/compare``) share.

Modules, one idea each (none is imported by the library proper):

- :mod:`~peft_catalyst.app.compare.stats`: paired intervals over seeds and the binomial interval of a win count;
- :mod:`~peft_catalyst.app.compare.store`: one JSON record per finished run, reused while its settings match;
- :mod:`~peft_catalyst.app.compare.schedule`: missing runs in order, dependencies first, shared by workers;
- :mod:`~peft_catalyst.app.compare.environment`: the command, packages and machine a report names;
- :mod:`~peft_catalyst.app.compare.runs`: the three methods of ``peft-catalyst compare`` as ``train`` runs;
- :mod:`~peft_catalyst.app.compare.summary`: its contrasts, the pooled mentor-vs-random count and the costs;
- :mod:`~peft_catalyst.app.compare.report`: its Markdown, JSON and PNG report and the headline line;
- :mod:`~peft_catalyst.app.compare.command`: the command itself (arguments, checks, resume).
"""
