"""The policy model: generation engines (transformers, vLLM) and the quickstart's tiny model."""
