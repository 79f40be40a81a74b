"""The sharded serving tier as processes (DESIGN §3 "router and workers"): workers that serve one
cluster of items each, a router in front of them, and a controller that sizes the replicas.
The scoring core they share is crossrec.query.sharding."""
