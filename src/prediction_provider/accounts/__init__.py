"""Users, roles and permissions, passwords, API keys and JWTs."""
