"""Expert back-ends behind one interface (replayed answers, OpenAI-compatible endpoints) and their
prices."""
