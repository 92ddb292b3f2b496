"""The seed's frontend (Node.js/express in the seed), in FastAPI, in the mesh.

It calls ``http://backend:8080`` as the seed does. The only mesh code is the
client's transport: routing (the 90/10 canary), retries, timeouts, load
balancing, outlier ejection and mTLS with the frontend's SPIFFE identity
happen in ``mesh.async_transport()``, driven by the Istio YAML.

Serve it with ``inmesh serve app:create_app --factory ...``: the app is made
from the serving mesh, so inbound mTLS and outbound calls share one mesh. Or
``python app.py``, which builds the mesh from ``INMESH_*`` variables (see
README.md).
"""

import os
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

import inmesh


def create_app(mesh: inmesh.Mesh) -> FastAPI:
    client = httpx.AsyncClient(transport=mesh.async_transport())

    @asynccontextmanager
    async def lifespan(app):
        yield
        await client.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/", response_class=PlainTextResponse)
    async def index():
        try:
            backend = await client.get("http://backend:8080")  # service-to-service call
            backend.raise_for_status()  # like axios: a non-2xx answer is an error
        except httpx.HTTPError:
            return PlainTextResponse("Error contacting backend", status_code=500)
        # Which backend version answered (the canary split, seen from outside).
        headers = {k: v for k, v in backend.headers.items() if k.startswith("x-backend-")}
        return PlainTextResponse(f"Frontend says: {backend.text}", headers=headers)

    return app


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "3000"))
    with inmesh.Mesh.from_env() as mesh:  # INMESH_WORKLOAD, INMESH_CONFIG, INMESH_CERT_DIR, ...
        print(f"Frontend listening on port {port}")
        mesh.serve(create_app(mesh), host="127.0.0.1", port=port)
