"""The portal: FastAPI app, domain services, store and web UI."""
