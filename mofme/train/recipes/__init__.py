"""The training recipes, one module per task, each registered with the loop
(:func:`mofme.train.trainer.register_recipe`) on import: restoration, lens-drop detection
(``drop_detection``) and recognition (``classification``, ``segmentation``). A new task is a module
here with a :class:`~mofme.train.trainer.Recipe` subclass and ``@register_recipe("<task>")``."""

from . import drop_detection, recognition, restoration

__all__ = ["drop_detection", "recognition", "restoration"]
