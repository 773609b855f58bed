"""The web dashboard: server-rendered pages under /dashboard, sharing the API's auth, audit and
security headers."""
