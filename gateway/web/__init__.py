"""Thin Starlette endpoints: public (visitors), admin (bearer token), ops (health, metrics)."""
