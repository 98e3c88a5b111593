"""Database administration: migrations and the connection used for them."""
