"""Few-label merger classification: fusion heads over galclip embeddings, and the evaluation harness."""
