"""Training recipes beside restoration (:class:`mofme.train.trainer.TrainingRecipe`): lens-drop
detection (``drop_detection``) and recognition (``classification``, ``segmentation``)."""
