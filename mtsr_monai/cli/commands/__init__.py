"""One module per ``mtsr`` subcommand (see :mod:`mtsr_monai.cli`). Keep module-level imports light."""
