"""orchestration layer (see docs/architecture.md)."""
