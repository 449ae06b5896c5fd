"""Ingestion: every source turns into canonical samples / dtc_events through the store."""
