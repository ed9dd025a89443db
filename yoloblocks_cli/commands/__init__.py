"""One module per `yb` command; each defines ``register(app)`` and imports torch lazily."""
