"""Export: delivery of result objects to PACS destinations, one thread and one deadline per
destination, with retries and backoff."""
