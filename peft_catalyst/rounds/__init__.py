"""The round engine: what happens between two gradient stages, one idea per module.

- :mod:`.engine`: a round from start to decision (:class:`~.engine.RoundEngine`);
- :mod:`.contract`: what the engine needs from its host (the callback) and the settings it reads;
- :mod:`.trajectory`: the soft prompt's trajectory that a mentor reads;
- :mod:`.mentor_exchange`: one request to a mentor and its parsed, checked answer;
- :mod:`.evidence`: the labelled examples (and errors) shown to a mentor;
- :mod:`.scoring`: a prompt's score on the catalyst split; :mod:`.multi_prompt`: several prompts in one pass;
- :mod:`.screening`: which candidates go on; :mod:`.race`: short trained stages that decide between them;
- :mod:`.restarts`: restart shapes and what a restart does to the optimizer.

Nothing is imported here, so importing one module does not load the others.
"""
