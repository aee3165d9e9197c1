"""Deprecated: the old home of training, evaluation and inference, now :mod:`mofme.train`,
:mod:`mofme.evaluate` and :mod:`mofme.infer`. Each old module path still imports (with a
DeprecationWarning) for one release."""
