"""MLServer runtimes and deployment manifests of driftloop's models (Seldon Core v2, KServe)."""
