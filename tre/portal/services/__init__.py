"""Domain services: each state change and its audit row in one transaction."""
