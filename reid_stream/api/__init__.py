"""The HTTP API: the views, their OpenAPI document, bearer tokens, query parameters, search, and the entity
browser's static files."""
