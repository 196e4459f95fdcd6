"""results layer (see docs/architecture.md)."""
