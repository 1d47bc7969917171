"""The ``infraflow`` command line: runs, servers, clusters, VMs and metrics over the REST API."""
