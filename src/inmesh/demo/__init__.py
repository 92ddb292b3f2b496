"""``inmesh demo``: the seed's frontend and backend in a mesh, on this machine.

* :mod:`inmesh.demo.apps`: the two services as plain WSGI/ASGI apps;
* :mod:`inmesh.demo.config`: the mesh configuration the demo writes;
* :mod:`inmesh.demo.progress`: its live step display;
* :mod:`inmesh.demo.run`: the workspace, the processes and the steps.
"""
