"""The audit log (``keel.audit.v1``): an append-only record of every change and every refused
attempt, written in the same database transaction as the change it records (``recorder``),
listed and followed through ``AuditService`` (``store``, ``servicer``)."""
