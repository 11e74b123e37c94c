"""Identity evaluation: benchmark readers and the metrics that score a model or a stream against true ids.

Pure numpy and the standard library, so the harness can run (and be tested) without Kafka, Redis or torch.
"""

from reid_stream.eval.datasets import ReidDataset, Sample, detect_layout, labels, load_dataset
from reid_stream.eval.metrics import (
    JUNK_PID,
    ClusteringResult,
    RetrievalResult,
    VerificationResult,
    clustering_metrics,
    retrieval_metrics,
    roc_curve,
    verification_metrics,
)

__all__ = [
    "JUNK_PID",
    "ClusteringResult",
    "ReidDataset",
    "RetrievalResult",
    "Sample",
    "VerificationResult",
    "clustering_metrics",
    "detect_layout",
    "labels",
    "load_dataset",
    "retrieval_metrics",
    "roc_curve",
    "verification_metrics",
]
