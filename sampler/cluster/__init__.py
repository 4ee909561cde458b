"""Tail sampling across hub replicas: state that every replica shares (redis_state)."""
