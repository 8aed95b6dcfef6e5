"""The local Trigger.dev API server behind scripts/devserver.

jsjson  JSON with JavaScript semantics (what the real server stores)
auth    secret key, public tokens (HS256 JWT), scopes
store   SQLite: runs, records, waitpoints
streams in-memory stream tails, live readers, SSE framing
api     the HTTP routes
"""
