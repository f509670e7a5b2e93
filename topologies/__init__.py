"""Mininet topologies of qiot. :mod:`topologies.fig1` describes the paper's Fig. 1 site without
importing Mininet (daemons read it from the run configuration) and builds its Mininet topology on
demand; only :mod:`harness.network` brings the topology up."""
