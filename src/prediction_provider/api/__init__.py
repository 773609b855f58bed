"""HTTP layer: routers, schemas and dependencies. No business logic lives here."""
