"""The notebook API: a model object (or spec) -> activation cache -> scores as pandas
DataFrames, with the same code and files as the command lines.

    from pipeline import api
    run = api.extract(model, "data/broden", ["conv5"], "runs/mine")   # nn.Module or spec
    res = api.score(run)                     # results/<layer>.* as score.py writes them
    res.units                                # one row per unit (unit numbered from 0)
    res.summary["per_category_sum"]          # both conventions, as the results document
    res.at(iou_threshold=0.08).counts        # another threshold from the cube, in memory
    api.load("runs/mine", scoring="iou0.08") # a scoring done before (score.py too)
    api.score(run, iou_threshold=0.08)       # written: results/iou0.08/, as score.py
    api.compare(res, "runs/other", "published.csv")  # side by side, one DataFrame

Nothing prints unless asked: ``progress=True`` shows tqdm bars (widgets in Jupyter) and
the log lines. ``run.py``: extract and the Run handle; ``results.py``: score and its
Results; ``experiments.py``: compare, rotate, sweep, null, formulas (compositional
explanations), concept_vectors (Net2Vec).
"""
from pipeline.api.experiments import compare, concept_vectors, formulas, null, rotate, sweep
from pipeline.api.results import (LayerCube, LayerResults, Results, load, score,
                                  units_frame)
from pipeline.api.run import Run, extract

__all__ = ["extract", "Run", "score", "load", "Results", "LayerResults", "LayerCube",
           "units_frame", "compare", "rotate", "sweep", "null", "formulas",
           "concept_vectors"]
