"""The pure core of who is who: cosine search, tracklets, entity prototypes, the space-time gate, plates,
ambiguity and merges.

No Kafka, Redis or torch here: the assign stage feeds it stored rows and new detections, and stores what it
decides.
"""
