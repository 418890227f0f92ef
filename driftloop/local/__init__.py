"""The local stack: the real parts of driftloop as processes on loopback."""
