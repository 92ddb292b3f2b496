"""Server-side policy: peer authentication (mTLS modes) and, later, authorization."""
