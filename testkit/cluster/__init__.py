"""A real Kubernetes cluster on this machine, built from published Go modules (no image registry,
no release download): ``build`` compiles and caches the binaries, ``pki`` makes the certificates,
``control_plane`` runs etcd and the API server on loopback."""
