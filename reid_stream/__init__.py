"""reid-stream: cross-camera re-identification of persons and vehicles on Kafka."""

__version__ = "0.1.0"
