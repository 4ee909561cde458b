"""Tail sampling: keep or drop whole traces by policy, crash-safe, before they are forwarded."""
