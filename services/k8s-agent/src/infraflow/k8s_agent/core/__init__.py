"""Pure logic of the k8s-agent: names, manifests, readiness and the cache's view. No I/O."""
