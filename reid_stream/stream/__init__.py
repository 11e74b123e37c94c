"""The two stream stages, free of Kafka (`embed`, `assign`), their per-event decode pool, the `reid-embedded`
wire format, and the batch Kafka I/O and topic admin they run on."""
