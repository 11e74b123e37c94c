"""Images: reading, decoding, cropping and letterboxing detections, fetching image URLs, and reading plates (PP-OCR)."""
