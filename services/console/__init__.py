"""The web console (``keel ui``, ``keel server --ui-port``): a JSON API over keel's gRPC services
plus the static single-page front end in ``static/``. See docs/console.md."""
