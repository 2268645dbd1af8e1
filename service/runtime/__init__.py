"""Process plumbing shared by every stage: logging, the audit log, and worker processes that die
with their parent."""
