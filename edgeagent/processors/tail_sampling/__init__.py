"""The `tail_sampling` processor: the `sampler` library (policies, buffer, decisions) joined to the
agent. config.py is its YAML block, stage.py the crash-safe stage between the queues, factory.py
its registration."""
