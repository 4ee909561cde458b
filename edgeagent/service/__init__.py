"""The service: builds the graph that `service.pipelines` describes and runs it.

receivers -> consumer (per receiver and signal) -> each pipeline's processors -> durable queues
-> senders -> exporters

- `host.py`: what a component may ask of the service (the Host Protocol).
- `consumers.py`: what a receiver hands requests to, and the running pipelines behind it.
- `graph.py`: builds components, queues and senders from the config, by a table of roles.
- `storage.py`: opens the queue stores the exporters' `sending_queue::storage` name.
- `telemetry.py`: self-metrics, drop and drain accounting, the metrics endpoint.
- `health.py`: the health, status and control-socket views of a running service.
- `service.py`: the `Service`: start and stop order.
"""
