"""Ray actors: thin wrappers that host library objects in processes of the cluster."""
