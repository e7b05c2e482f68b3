"""The HTTP layer: routes, request schemas, strict parameter parsing, middleware, and the one mapping from
errors to statuses. It checks types and bounds, then calls the core."""
