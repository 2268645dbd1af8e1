"""Private: the measured fast path that replaces parts of pynetdicom's association loop (prompt
reactor) and receives data sets straight to disk (spool). Every overridden pynetdicom method is
pinned by source hash; see ``docs/pynetdicom-upstream.md`` for what pynetdicom would need so this
can go."""
