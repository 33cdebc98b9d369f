"""The serving path: visitor context to a rendered banner, snippet or config."""
