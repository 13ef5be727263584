"""What the keel SDK and the keel server share: one definition of each wire-level rule.

Both sides import these modules (the server as ``keel.shared``; it never imports the SDK's
private ``keel._*`` modules), so a rule lives in exactly one place:

* ``keel.shared.uris``: the grammar of ``models:/`` and ``runs:/`` URIs, stage names, and the
  name, alias and version rules those URIs carry;
* ``keel.shared.tensors``: the tensor codec (KServe v2 datatypes, raw bytes and typed contents
  to and from numpy, with every bounds check) and the keys of MLflow's scoring JSON;
* ``keel.shared.chunks``: the framing of artifact chunk messages and disk reservation;
* ``keel.shared.pages``: the page-size caps of every list call;
* ``keel.shared.remote``: the seam through which the model format gets a remote model's files.

Everything here is pure: no network client, no database, no module above ``keel.exceptions``.
A malformed input raises a ``keel.exceptions`` error; in the server, the interceptor's
``translate()`` turns it into the server's error with the same code, reason and field.
Importing this package imports nothing.
"""
