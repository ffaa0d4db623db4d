"""Training of any model family: the streamed loader, checkpoints and the one trainer loop.

:func:`calofast.training.loop.run_stage` trains one stage of a model from a spec (a
plain dict built by the workflow); the family (:mod:`calofast.models`) supplies
the networks, optimisers and the step.
"""

from calofast.training.checkpoints import TrainingError, build_model, load_checkpoint

__all__ = ["TrainingError", "build_model", "load_checkpoint"]
