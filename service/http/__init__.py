"""HTTP layer: thin blueprints that parse with pydantic, call a use case and return JSON."""
