"""A hospital's federation node: common data model, ingestion, governance, audit."""
