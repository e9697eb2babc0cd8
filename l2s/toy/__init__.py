"""The toy world: a synthetic reasoning task and tiny Qwen2 models trained on it, on CPU.

See :mod:`l2s.toy.task` for the task and why it is shaped the way it is, :mod:`l2s.toy.tokenizer`
for the word-level tokenizer, :mod:`l2s.toy.family` for the model sizes and
:mod:`l2s.toy.build` for training the quick / slow / short family.
"""
