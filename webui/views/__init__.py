"""Server-rendered pages, one module per area. Writes go through registry.services."""
