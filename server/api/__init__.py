"""The HTTP surface: request/response schemas, completions, streaming, errors, ids."""
