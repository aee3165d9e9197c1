"""Evaluation: restoration metrics over datasets (``restoration``), recognition per weather condition
and restore-then-recognise (``recognition``), expert routing statistics (``routing``).

    from mofme.evaluate import evaluate
    report = evaluate(model, BuiltinWeatherDataset("test"))
    print(report.to_markdown())

Imports the library and ``infer`` (restoration is scored through the same tiled inference users run).
"""

from .restoration import EvalReport, evaluate

__all__ = ["EvalReport", "evaluate"]
