"""Routing: which rule a complete study matches (process with a profile, forward, ignore),
forwarding of originals, and fetching priors from PACS."""
