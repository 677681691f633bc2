"""The served orchestrator's HTTP API and its settings."""
