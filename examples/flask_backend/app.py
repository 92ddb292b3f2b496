"""The seed's backend: a minimal Flask app, in the mesh.

The application code is the seed's. The mesh needs no code in a backend that
calls nobody: ``inmesh serve app:app ...`` serves it with STRICT mTLS and
checks the AuthorizationPolicy before a request reaches Flask. Run as
``python app.py``, it builds its mesh from ``INMESH_*`` variables instead
(see README.md).

One addition to the seed: the ``X-Backend-Version`` response header (from
``VERSION``), so that a canary split can be seen from outside.
"""

import os

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello_world():
    return "Hello from Backend!", {"X-Backend-Version": os.environ.get("VERSION", "v1")}


if __name__ == "__main__":
    import inmesh

    mesh = inmesh.Mesh.from_env()  # INMESH_WORKLOAD, INMESH_CONFIG, INMESH_CERT_DIR, ...
    mesh.serve(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
