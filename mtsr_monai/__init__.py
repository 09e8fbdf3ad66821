"""mtsr-monai: super-resolution and modality translation of clinical brain MRI on MONAI.

Heavy dependencies (torch, monai, SimpleITK) are imported lazily by the modules that need them,
so that ``import mtsr_monai`` and ``mtsr --help`` stay instant.
"""

from mtsr_monai.errors import install_bundle_excepthook

__version__ = "0.1.0"

__all__ = ["__version__"]

# `python -m monai.bundle run` of a bundle config (which imports mtsr_monai) ends an error with one line
# naming its cause, not MONAI's wrappers
install_bundle_excepthook()
