"""Reporting: the HTTP API, status pages, plots, metrics and cohort statistics."""
