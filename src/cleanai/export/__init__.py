"""Export to ONNX with a parity check against torch, and ONNX Runtime sessions and saved graph optimisations."""

from cleanai.export.exporter import EXPORTERS, ExportError, ExportResult, export_onnx
from cleanai.export.session import GRAPH_OPTIMIZATIONS, create_session, optimize_onnx

__all__ = [
    "EXPORTERS",
    "GRAPH_OPTIMIZATIONS",
    "ExportError",
    "ExportResult",
    "create_session",
    "export_onnx",
    "optimize_onnx",
]
