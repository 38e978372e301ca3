"""The top floor: the ``atomthink`` command line and the embedded one-process mode (gateway and workers on one
queue). It is the only package that wires ``service`` and ``workers`` together."""
