"""Ignite training engines, one per model family, and the handlers they share.

- :class:`~mtsr_monai.engines.paired.PairedAdversarialTrainer`: paired image-to-image training
  (LR -> HR super-resolution, thick-slice restoration) with an optional adversarial critic.
- handlers: resumable checkpoints, TensorBoard image grids, paired batch preparation.
"""
