"""Process-level concerns: logging, default paths, signals."""
