"""Serving on a Ray cluster: the model's replicas as a Ray Serve application (replica.py),
the hub's engine that reaches them through a Serve handle (engine.py), connecting to the
cluster and describing it (cluster.py), and batch over Ray Data (batch.py).

Ray is an extra (`neve[ray]`): nothing outside this package imports it, and this package
is imported only when `engine: ray` or `neve ray ...` / `neve batch --ray` asks for it."""
