"""BIDS App interface: a whole BIDS dataset processed by one command, written as BIDS derivatives.

``mtsr bids BIDS_DIR OUTPUT_DIR participant|group --task super-resolve|clinical-sr|translate|qc`` follows the
BIDS-Apps convention (the same positional arguments as MRIQC or fMRIPrep):

- :mod:`~mtsr_monai.bids.layout`: a strict reader of the raw dataset (``derivatives/`` and anything not named
  by the specification are ignored);
- :mod:`~mtsr_monai.bids.derivatives`: output names (``desc-`` entity), JSON sidecars with provenance,
  ``dataset_description.json`` with ``GeneratedBy``, the provenance hash that decides what is already done;
- :mod:`~mtsr_monai.bids.tasks`: the four tasks, each loading its model once per process and calling the
  per-file inference functions of :mod:`mtsr_monai.inference`;
- :mod:`~mtsr_monai.bids.quality`: IQMs of inputs and outputs, input/output consistency;
- :mod:`~mtsr_monai.bids.runner`: the participant level (resumable, failures recorded, sharded over
  ``torchrun`` ranks and SLURM array tasks);
- :mod:`~mtsr_monai.bids.group`: the group level (HTML report and TSV over all participants);
- :mod:`~mtsr_monai.bids.convert`: a small BIDS tree from a folder of scans (tests, benchmarks, demos).

Nothing heavy is imported here.
"""
