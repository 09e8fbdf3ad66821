"""MONAI Label app: x4 super-resolution (``mtsr_sr``), modality translation (``mtsr_mt``) and clinical
super-resolution (``clinical_sr``) of the studies' volumes, each served from its bundle's inference config.

Start it with ``mtsr label-server --studies DIR`` (or ``monailabel start_server --app <this folder>
--studies DIR``). ``--conf models sr,mt`` limits the models served; ``--conf bundles PATH`` reads the bundles
from another folder than the repository's ``bundles/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

import mtsr_monai
from mtsr_monai.inference.bundle import bundles_root
from mtsr_monai.label import served_models
from mtsr_monai.label.tasks import ClinicalSRTask, SuperResolutionTask, TranslationTask, is_upload

logger = logging.getLogger(__name__)

TASKS = {"mtsr_sr": SuperResolutionTask, "mtsr_mt": TranslationTask, "clinical_sr": ClinicalSRTask}


class MTSRApp(MONAILabelApp):
    """The three bundles as non-segmentation ("others") inference tasks; no training, no labels."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, Any]) -> None:
        # read before MONAILabelApp.__init__, which calls init_infers
        self.bundles = Path(conf.get("bundles") or bundles_root())
        self.models = served_models(conf.get("models", "all"))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="mtsr",
            description="MRI super-resolution, modality translation and clinical SR (mtsr-monai)",
            version=mtsr_monai.__version__,
        )

    def infer(self, request: dict[str, Any], datastore: Any = None) -> Any:
        """MONAI Label's inference; a refused or failed request's uploaded image is deleted too (MONAI Label
        deletes an upload only after a successful answer). Never a file of the studies folder."""
        try:
            return super().infer(request, datastore)
        except Exception as err:
            image = request.get("image")
            if is_upload(image) and not Path(image).resolve().is_relative_to(Path(self.studies).resolve()):
                Path(image).unlink(missing_ok=True)
            if isinstance(err, MONAILabelException) and err.error == MONAILabelError.INVALID_INPUT:
                raise HTTPException(status_code=400, detail=err.msg) from err  # a model not served: why
            raise

    def init_infers(self) -> dict[str, Any]:
        infers = {}
        for name in self.models:
            task = TASKS[name](str(self.bundles / name), self.conf)
            if not task.is_valid():
                raise RuntimeError(f"bundle {self.bundles / name} has no usable inference config or weights")
            infers[name] = task
            logger.info("serving %s from %s", name, self.bundles / name)
        return infers
