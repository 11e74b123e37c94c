"""The design's import path for the stored-embedding type and the similarity (they live in identity.matching)."""

from reid_stream.identity.matching import EntityEmbedding, cosine_similarity

__all__ = ["EntityEmbedding", "cosine_similarity"]
