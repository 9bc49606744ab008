"""HTTP routers, one per concern."""
