"""Export a trained model to ONNX or TorchScript, checked by running the exported file.

Below the tasks in the package tree: exporters take any module (a task's
`inference_module()` when it has one) and never import the tasks, which call them. Classifiers
export with `export_onnx` / `export_torchscript`; detectors, with box decoding and NMS inside the
graph, with `export_detector_onnx` / `export_detector_torchscript`.

Examples:
    >>> from autotimm.export import export_onnx, export_torchscript
"""

from autotimm.export.detection import (
    DetectionCheck,
    export_detector_onnx,
    export_detector_torchscript,
)
from autotimm.export.exporters import (
    METADATA_FILE,
    ExportCheckError,
    TorchScriptMethod,
    export_onnx,
    export_torchscript,
)

__all__ = [
    "METADATA_FILE",
    "DetectionCheck",
    "ExportCheckError",
    "TorchScriptMethod",
    "export_detector_onnx",
    "export_detector_torchscript",
    "export_onnx",
    "export_torchscript",
]
