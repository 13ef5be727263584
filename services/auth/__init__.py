"""Auth: identities, groups, tokens and per-resource permissions (``keel.auth.v1``), and the one
policy table that decides, before any handler runs, whether a caller may make a call."""
