"""Serving on a Ray cluster: the model's replicas as a Ray Serve application (replica.py),
the hub's engine that reaches them through a Serve handle (engine.py), connecting to the
cluster and describing it (cluster.py), and batch over Ray Data (batch.py).

Ray is an extra (`neve[ray]`): nothing outside this package imports it, and its modules
that do are imported only when `engine: ray` or `neve ray ...` / `neve batch --ray` asks
for them. layout.py (how one replica spreads over GPUs) imports no Ray: the deploy
renderers check layouts with it."""
