"""mtsr-monai: super-resolution and modality translation of clinical brain MRI on MONAI.

Heavy dependencies (torch, monai, SimpleITK) are imported lazily by the modules that need them,
so that ``import mtsr_monai`` and ``mtsr --help`` stay instant.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
