"""The rollout loop: the chat format, tool-call parsing, the multi-turn episode, typed samples and
their Parquet rows, failure classification."""
